//! Reconciliation storage: the entries to reconcile, runs with their exceptions, and
//! append-only resolution notes.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};
use anyhow::ensure;
use tollgate_metering::{Entry, EntryState, NewReconRun, ReconClass, ReconItem, ReconScope};

use crate::{CHAIN_ID, asset, each_engine, entry_in, hash, nonce, pay_to, payer};

fn scope(from_block: u64, to_block: u64) -> ReconScope {
    ReconScope { chain_id: CHAIN_ID, asset: asset(), pay_to: vec![pay_to()], from_block, to_block }
}

/// The item of a ledger entry as the matcher reports it.
fn item_of(class: ReconClass, e: &Entry) -> ReconItem {
    ReconItem {
        class,
        chain_id: e.chain_id,
        asset: e.asset,
        payer: e.payer,
        pay_to: e.pay_to,
        chain_to: None,
        nonce: Some(e.nonce),
        amount_ledger: Some(e.amount.get()),
        amount_chain: (class == ReconClass::Matched).then(|| U256::from(e.amount.get())),
        tx_hash: e.tx_hash,
        block_number: e.block_number,
        log_index: e.log_index,
        entry_id: Some(e.id.clone()),
        provider: Some(e.provider.clone()),
        route: Some(e.route.clone()),
        ledger_state: Some(e.state),
        block_time_unix_s: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_entries_by_block_range() {
    // Goal: settled_entries returns settled and refund_owed entries of the payee with their block in range, and every settling entry, in block order; other states, payees, chains and blocks never.
    each_engine(|db| async move {
        let ledger = db.ledger;
        // `settled(n)` puts entry n in block 1000 + n.
        let s2 = entry_in(&ledger, EntryState::Settled, 2, 10).await?;
        let s5 = entry_in(&ledger, EntryState::Settled, 5, 10).await?;
        let r3 = entry_in(&ledger, EntryState::RefundOwed, 3, 10).await?;
        let settling = entry_in(&ledger, EntryState::Settling, 4, 10).await?;
        let _voided = entry_in(&ledger, EntryState::Voided, 6, 10).await?;
        let _failed = entry_in(&ledger, EntryState::SettleFailed, 7, 10).await?;
        let _far = entry_in(&ledger, EntryState::Settled, 50, 10).await?;

        let ids = |v: Vec<tollgate_metering::Entry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        let got = ledger.recon().settled_entries(CHAIN_ID, asset(), pay_to(), Some(1_002), Some(1_005), 100).await?;
        ensure!(ids(got) == [settling.clone(), s2.clone(), r3.clone(), s5.clone()], "range and order");
        let got = ledger.recon().settled_entries(CHAIN_ID, asset(), pay_to(), None, None, 100).await?;
        ensure!(got.len() == 5, "unbounded: {}", got.len());
        ensure!(ledger.recon().settled_entries(CHAIN_ID, asset(), pay_to(), None, None, 2).await?.len() == 2, "limit");
        ensure!(
            ledger.recon().settled_entries(CHAIN_ID, asset(), payer(), None, None, 100).await?.is_empty(),
            "other payee"
        );
        ensure!(ledger.recon().settled_entries(1, asset(), pay_to(), None, None, 100).await?.is_empty(), "other chain");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_exceptions_and_notes() {
    // Goal: a run is stored with its range, cursor, counts, decimal totals (beyond 64 bits) and exceptions; an identical re-run stores identical results; notes append and can be neither edited nor deleted, nor can runs or exceptions.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let matched = entry_in(&ledger, EntryState::Settled, 1, 10).await?;
        let missing = entry_in(&ledger, EntryState::Settled, 2, 10).await?;
        let entries =
            ledger.recon().settled_entries(CHAIN_ID, asset(), pay_to(), Some(1_000), Some(1_010), 100).await?;
        let e1 = entries.iter().find(|e| e.id == matched).unwrap();
        let e2 = entries.iter().find(|e| e.id == missing).unwrap();
        let big = U256::from(u128::MAX) * U256::from(3u8);
        let stray = ReconItem {
            class: ReconClass::OnchainMissingInLedger,
            payer: Address::repeat_byte(0x77),
            nonce: None,
            amount_ledger: None,
            amount_chain: Some(big),
            tx_hash: Some(hash(99)),
            block_number: Some(1_009),
            log_index: Some(0),
            entry_id: None,
            provider: None,
            route: None,
            ledger_state: None,
            block_time_unix_s: None,
            ..item_of(ReconClass::OnchainMissingInLedger, e1)
        };
        let items = [item_of(ReconClass::Matched, e1), item_of(ReconClass::LedgerSettledMissingOnchain, e2), stray];
        let counts: BTreeMap<ReconClass, u64> =
            ReconClass::ALL.into_iter().map(|c| (c, items.iter().filter(|i| i.class == c).count() as u64)).collect();
        let scope = scope(1_000, 1_010);
        let run = NewReconRun {
            scope: &scope,
            cursor_block: Some(1_010),
            started_unix_s: 50,
            finished_unix_s: 51,
            counts: &counts,
            chain_total: big + U256::from(1_000u64),
            ledger_total: U256::from(2_000u64),
            matched_total: U256::from(1_000u64),
            tie_out_holds: true,
            exceptions: items.iter().filter(|i| i.class != ReconClass::Matched).collect(),
        };
        let first = ledger.recon().record_run(&run).await?;
        let second = ledger.recon().record_run(&run).await?;
        ensure!(second > first);
        let runs = ledger.recon().runs(CHAIN_ID, asset(), 10).await?;
        ensure!(runs.len() == 2);
        let r = &runs[0];
        ensure!(r.id == first && r.from_block == 1_000 && r.to_block == 1_010 && r.cursor_block == Some(1_010));
        ensure!(r.counts[&ReconClass::Matched] == 1);
        ensure!(r.counts[&ReconClass::LedgerSettledMissingOnchain] == 1);
        ensure!(r.counts[&ReconClass::OnchainMissingInLedger] == 1);
        ensure!(r.chain_total == big + U256::from(1_000u64) && r.matched_total == U256::from(1_000u64));
        ensure!(r.ledger_total == U256::from(2_000u64) && r.tie_out_holds);
        let mut again = runs[1].clone();
        again.id = r.id;
        ensure!(&again == r, "a re-run stores the same results");

        let exceptions = ledger.recon().exceptions(first).await?;
        ensure!(exceptions.len() == 2, "{exceptions:?}");
        let lost = exceptions.iter().find(|x| x.class == ReconClass::LedgerSettledMissingOnchain).unwrap();
        ensure!(
            lost.entry_id.as_ref() == Some(&missing)
                && lost.amount_ledger == Some(1_000)
                && lost.nonce == Some(nonce(2))
        );
        let stray = exceptions.iter().find(|x| x.class == ReconClass::OnchainMissingInLedger).unwrap();
        ensure!(stray.amount_chain == Some(big) && stray.entry_id.is_none() && stray.tx_hash == Some(hash(99)));
        let second_exceptions = ledger.recon().exceptions(second).await?;
        ensure!(
            second_exceptions
                .iter()
                .map(|x| (x.class, x.amount_chain))
                .eq(exceptions.iter().map(|x| (x.class, x.amount_chain)))
        );

        let n1 = ledger.recon().add_note(lost.id, "ops@example", "tx dropped; re-settling", 60).await?;
        let n2 = ledger.recon().add_note(lost.id, "ops@example", "resolved", 70).await?;
        let notes = ledger.recon().notes(lost.id).await?;
        ensure!(notes.iter().map(|n| n.id).collect::<Vec<_>>() == [n1, n2] && notes[1].why == "resolved");
        ensure!(ledger.recon().add_note(lost.id, "", "x", 1).await.is_err(), "empty author refused");
        ensure!(ledger.recon().add_note(i64::MAX, "a", "x", 1).await.is_err(), "unknown exception refused");
        for sql in [
            "UPDATE recon_notes SET why = 'edited'",
            "DELETE FROM recon_notes",
            "UPDATE recon_runs SET matched_total = '0'",
            "DELETE FROM recon_runs",
            "UPDATE recon_exceptions SET amount_chain = '1'",
            "DELETE FROM recon_exceptions",
        ] {
            let e = db.raw.exec_rolled_back(sql).await;
            ensure!(e.as_ref().is_err_and(|m| m.contains("append-only")), "{sql}: {e:?}");
        }
        ensure!(
            db.raw
                .exec_rolled_back(
                    "INSERT INTO recon_notes (exception_id, who, why, at_unix_s) VALUES (1, 'a', 'b', -1)"
                )
                .await
                .is_err()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recon_cursor_is_the_highest_stored() {
    // Goal: the resume cursor of (chain, asset) is the highest cursor of its runs, ignoring runs without one and other assets; none before any run.
    each_engine(|db| async move {
        let ledger = db.ledger;
        ensure!(ledger.recon().cursor(CHAIN_ID, asset()).await?.is_none(), "no run yet");
        let counts = BTreeMap::new();
        for (from, to, cursor) in [(1_000, 1_010, Some(1_010)), (1_011, 1_020, None), (0, 50, Some(50))] {
            let scope = scope(from, to);
            let run = NewReconRun {
                scope: &scope,
                cursor_block: cursor,
                started_unix_s: 1,
                finished_unix_s: 1,
                counts: &counts,
                chain_total: U256::ZERO,
                ledger_total: U256::ZERO,
                matched_total: U256::ZERO,
                tie_out_holds: true,
                exceptions: Vec::new(),
            };
            ledger.recon().record_run(&run).await?;
        }
        ensure!(ledger.recon().cursor(CHAIN_ID, asset()).await? == Some(1_010));
        ensure!(ledger.recon().cursor(CHAIN_ID, Address::repeat_byte(0x55)).await?.is_none(), "other asset");
        ensure!(ledger.recon().cursor(CHAIN_ID + 1, asset()).await?.is_none(), "other chain");
        Ok(())
    })
    .await;
}
