//! Read-side queries (recovery work list, deferred backlog, spend totals) and leases.

use alloy_primitives::Address;
use anyhow::ensure;
use tollgate_metering::{AtomicAmount, EntryState, SettlementMode, SpendQuery, SpendTotals, Tally, Transition};

use crate::{CHAIN_ID, asset, each_engine, entry_in, hash, new_entry, payer, settled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_and_deferred_backlog() {
    // Goal: unfinished lists reserved/forwarded/settling entries updated at or before the cutoff, oldest update first, within the limit; deferred_backlog lists deferred entries in forwarded, oldest first.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let reserved = ledger.entries().reserve(&new_entry(1, 10, 100)).await?;
        let settling = ledger.entries().reserve(&new_entry(2, 10, 90)).await?;
        ledger
            .entries()
            .transition(&settling, Transition::Settling { tx_hash: hash(2) }, "settle_sent", None, 130)
            .await?;
        let forwarded = ledger.entries().reserve(&new_entry(3, 10, 95)).await?;
        ledger
            .entries()
            .transition(&forwarded, Transition::Forwarded { upstream_status: Some(200) }, "upstream_ok", None, 110)
            .await?;
        let _settled = entry_in(&ledger, EntryState::Settled, 4, 80).await?;
        let _voided = entry_in(&ledger, EntryState::Voided, 5, 80).await?;

        let mut deferred = Vec::new();
        for (n, created) in [(10, 300), (11, 200), (12, 250)] {
            let mut e = new_entry(n, 10, created);
            e.mode = SettlementMode::Deferred;
            let id = ledger.entries().reserve(&e).await?;
            if n != 12 {
                ledger
                    .entries()
                    .transition(&id, Transition::Forwarded { upstream_status: Some(200) }, "upstream_ok", None, 400)
                    .await?;
            }
            deferred.push(id);
        }

        let ids = |entries: Vec<tollgate_metering::Entry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
        ensure!(ids(ledger.entries().unfinished(110, 100).await?) == [reserved.clone(), forwarded.clone()]);
        ensure!(
            ids(ledger.entries().unfinished(130, 100).await?)
                == [reserved.clone(), forwarded.clone(), settling.clone()]
        );
        ensure!(
            ids(ledger.entries().unfinished(130, 2).await?) == [reserved.clone(), forwarded.clone()],
            "limit applies"
        );
        ensure!(ledger.entries().unfinished(99, 100).await?.is_empty());
        let all = ledger.entries().unfinished(10_000, 100).await?;
        ensure!(all.len() == 6 && all.iter().all(|e| !e.state.is_terminal()));

        // Created at 200 and 300 and forwarded; the one created at 250 is still reserved.
        let backlog = ledger.entries().deferred_backlog(100).await?;
        ensure!(ids(backlog.clone()) == [deferred[1].clone(), deferred[0].clone()]);
        ensure!(backlog.iter().all(|e| e.mode == SettlementMode::Deferred && e.state == EntryState::Forwarded));
        ensure!(ids(ledger.entries().deferred_backlog(1).await?) == [deferred[1].clone()]);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_spend_and_spend_totals() {
    // Goal: pending_spend sums reserved/forwarded/settling amounts exactly (beyond i64); spend splits settled, pending and refund_owed and honours the provider, route and [from, to) filters; other payers, assets and void/failed entries never count.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let max = AtomicAmount::MAX;
        // (nonce, amount, provider, route, created, final state)
        let rows = [
            (1, 1_000, "openai", "chat", 100, EntryState::Settled),
            (2, max, "anthropic", "messages", 200, EntryState::Settled),
            (3, 300, "openai", "embed", 150, EntryState::Reserved),
            (4, 400, "openai", "chat", 250, EntryState::Settling),
            (5, max, "openai", "chat", 260, EntryState::Forwarded),
            (6, max, "anthropic", "messages", 270, EntryState::Reserved),
            (7, 500, "openai", "chat", 120, EntryState::RefundOwed),
            (8, 10_000, "openai", "chat", 130, EntryState::Voided),
            (9, 20_000, "openai", "chat", 140, EntryState::SettleFailed),
        ];
        for (n, amount, provider, route, created, state) in rows {
            let mut e = new_entry(n, amount, created);
            e.provider = provider.to_owned();
            e.route = route.to_owned();
            let id = ledger.entries().reserve(&e).await?;
            walk(&ledger, &id, state, n).await?;
        }
        // Noise: another payer and another asset.
        let mut other_payer = new_entry(50, 7_777, 100);
        other_payer.payer = Address::repeat_byte(0xC3);
        ledger.entries().reserve(&other_payer).await?;
        let mut other_asset = new_entry(51, 8_888, 100);
        other_asset.asset = Address::repeat_byte(0xD4);
        ledger.entries().reserve(&other_asset).await?;

        let big = u128::from(max);
        let pending = ledger.spend().pending(CHAIN_ID, asset(), payer()).await?;
        ensure!(pending == 300 + 400 + 2 * big, "pending {pending}");
        ensure!(pending > u128::from(u64::MAX) / 2, "the sum exceeds i64 and is still exact");
        ensure!(ledger.spend().pending(CHAIN_ID, asset(), Address::repeat_byte(0xEE)).await? == 0);
        ensure!(ledger.spend().pending(CHAIN_ID, Address::repeat_byte(0xD4), payer()).await? == 8_888, "per asset");

        let query = SpendQuery {
            chain_id: CHAIN_ID,
            asset: asset(),
            payer: payer(),
            provider: None,
            route: None,
            created_from_unix_s: None,
            created_before_unix_s: None,
        };
        let tally = |count, amount| Tally { count, amount };
        let all = ledger.spend().totals(&query).await?;
        ensure!(
            all == SpendTotals {
                settled: tally(2, 1_000 + big),
                pending: tally(4, 300 + 400 + 2 * big),
                refund_owed: tally(1, 500),
            },
            "{all:?}"
        );
        let openai =
            ledger.spend().totals(&SpendQuery { provider: Some("openai".to_owned()), ..query.clone() }).await?;
        ensure!(
            openai
                == SpendTotals {
                    settled: tally(1, 1_000),
                    pending: tally(3, 300 + 400 + big),
                    refund_owed: tally(1, 500)
                },
            "{openai:?}"
        );
        let chat = SpendQuery { provider: Some("openai".to_owned()), route: Some("chat".to_owned()), ..query.clone() };
        let chat_totals = ledger.spend().totals(&chat).await?;
        ensure!(chat_totals.pending == tally(2, 400 + big) && chat_totals.settled == tally(1, 1_000));
        // Created in [100, 200): nonces 1 (100), 3 (150), 7 (120); 2 (200) is excluded.
        let window = SpendQuery { created_from_unix_s: Some(100), created_before_unix_s: Some(200), ..query.clone() };
        let windowed = ledger.spend().totals(&window).await?;
        ensure!(
            windowed == SpendTotals { settled: tally(1, 1_000), pending: tally(1, 300), refund_owed: tally(1, 500) },
            "{windowed:?}"
        );
        let nobody = ledger.spend().totals(&SpendQuery { payer: Address::repeat_byte(0xEE), ..query }).await?;
        ensure!(nobody == SpendTotals::default());
        Ok(())
    })
    .await;
}

/// Moves a fresh entry to `state` through legal transitions.
async fn walk(
    ledger: &tollgate_metering::Ledger,
    id: &tollgate_metering::EntryId,
    state: EntryState,
    n: u64,
) -> anyhow::Result<()> {
    let steps: Vec<Transition> = match state {
        EntryState::Reserved => vec![],
        EntryState::Forwarded => vec![Transition::Forwarded { upstream_status: Some(200) }],
        EntryState::Settling => vec![Transition::Settling { tx_hash: hash(n) }],
        EntryState::Settled => vec![Transition::Settling { tx_hash: hash(n) }, settled(n)],
        EntryState::RefundOwed => vec![
            Transition::Settling { tx_hash: hash(n) },
            settled(n),
            Transition::RefundOwed { reason: "upstream failed".to_owned() },
        ],
        EntryState::Voided => vec![Transition::Voided { reason: "upstream failed".to_owned() }],
        EntryState::SettleFailed => {
            vec![Transition::Settling { tx_hash: hash(n) }, Transition::SettleFailed { reason: "reverted".to_owned() }]
        }
    };
    for t in steps {
        ledger.entries().transition(id, t, "test_setup", None, 500).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_exclusive_until_expiry() {
    // Goal: a lease is taken when free, renewed by its holder, refused to others until it expires, and released only by its holder.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let name = "relayer:0xabc";
        ensure!(ledger.leases().try_acquire(name, "gw-a", 30, 100).await?, "free lease is taken");
        ensure!(!ledger.leases().try_acquire(name, "gw-b", 30, 110).await?, "held by a");
        ensure!(ledger.leases().try_acquire(name, "gw-a", 30, 120).await?, "a renews until 150");
        ensure!(!ledger.leases().try_acquire(name, "gw-b", 30, 149).await?, "still a's at 149");
        ensure!(ledger.leases().try_acquire(name, "gw-b", 30, 150).await?, "expired at 150: b takes it");
        ensure!(!ledger.leases().try_acquire(name, "gw-a", 30, 151).await?, "now b's");
        ledger.leases().release(name, "gw-a").await?;
        ensure!(!ledger.leases().try_acquire(name, "gw-a", 30, 152).await?, "a cannot release b's lease");
        ledger.leases().release(name, "gw-b").await?;
        ensure!(ledger.leases().try_acquire(name, "gw-a", 30, 153).await?, "released: a takes it");
        ensure!(ledger.leases().try_acquire("relayer:0xdef", "gw-b", 30, 153).await?, "leases are independent");
        ensure!(
            ledger.leases().try_acquire(name, "", 30, 153).await.is_err()
                && ledger.leases().try_acquire(name, "gw-a", 0, 153).await.is_err()
        );
        Ok(())
    })
    .await;
}
