//! Races: many reservations of one authorization, many transitions of one entry, many takers of
//! one lease. Tasks run on a multi-threaded runtime, each with its own connection.

use anyhow::ensure;
use tollgate_metering::{Engine, EntryState, Ledger, MeteringError, Transition};

use crate::{each_engine, hash, new_entry, test_options};

const RACERS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_have_one_winner() {
    // Goal: 50 concurrent reservations of one authorization yield exactly one entry; the 49 others get DuplicateAuthorization naming it. On PostgreSQL half of them go through a second Ledger (another replica's pool).
    each_engine(|db| async move {
        let replica = match db.engine {
            Engine::Postgres => Ledger::connect(&db.url, test_options()).await?,
            Engine::Sqlite => db.ledger.clone(),
        };
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let ledger = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(
                async move { ledger.entries().reserve(&new_entry(7, 1_000, 100 + i as u64)).await },
            ));
        }
        let mut winners = Vec::new();
        let mut duplicates = Vec::new();
        for task in tasks {
            match task.await? {
                Ok(id) => winners.push(id),
                Err(MeteringError::DuplicateAuthorization { existing, state }) => duplicates.push((existing, state)),
                Err(other) => anyhow::bail!("unexpected error: {other}"),
            }
        }
        ensure!(winners.len() == 1, "winners: {winners:?}");
        ensure!(duplicates.len() == RACERS - 1);
        ensure!(duplicates.iter().all(|(existing, state)| *existing == winners[0] && *state == EntryState::Reserved));
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_entries").await == 1);
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == 1, "losers left no event");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_have_one_winner() {
    // Goal: 50 concurrent forwarded -> settling transitions of one entry (through two pools) apply exactly once; losers see StaleState or NotAReplacement and append no event. On PostgreSQL the racers are held at the row lock after reading `forwarded`, so the conditional UPDATE itself must stop all but one.
    each_engine(|db| async move {
        let replica = Ledger::connect(&db.url, test_options()).await?;
        let id = crate::entry_in(&db.ledger, EntryState::Forwarded, 1, 100).await?;
        // PostgreSQL: a row lock lets every racer read `forwarded` (reads are not blocked) and then
        // wait in its UPDATE. SQLite serialises whole write transactions, so it needs no gate.
        let gate = match &db.raw {
            crate::Raw::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT id FROM ledger_entries WHERE id = $1 FOR UPDATE")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                Some((pool.clone(), tx))
            }
            crate::Raw::Sqlite(_) => None,
        };
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let ledger = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                ledger.entries().transition(&id, Transition::Settling { tx_hash: hash(1) }, "settle_sent", None, 200).await
            }));
        }
        let blocked = (2 * test_options().max_connections) as i64;
        if let Some((pool, tx)) = gate {
            // Every connection of both pools is busy with a racer: wait until all of them have
            // read `forwarded` and queue on the lock, then let them go.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&pool)
                .await?;
                if waiting == blocked {
                    break;
                }
                ensure!(std::time::Instant::now() < deadline, "only {waiting} racers reached the lock");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            tx.rollback().await?;
        }
        let (mut wins, mut stale, mut same_hash) = (0, 0, 0);
        for task in tasks {
            match task.await? {
                Ok(entry) => {
                    ensure!(entry.state == EntryState::Settling && entry.tx_hash == Some(hash(1)));
                    wins += 1;
                }
                Err(MeteringError::StaleState { expected: EntryState::Forwarded, found: EntryState::Settling, .. }) => {
                    stale += 1
                }
                Err(MeteringError::NotAReplacement { .. }) => same_hash += 1,
                Err(other) => anyhow::bail!("unexpected error: {other}"),
            }
        }
        ensure!(wins == 1, "wins {wins}, stale {stale}, same hash {same_hash}");
        if db.engine == Engine::Postgres {
            // The gated racers read `forwarded` and were stopped by the conditional UPDATE
            // itself; racers that read before the winner committed are stale too.
            ensure!(stale >= blocked - 1, "every gated loser was stopped by the conditional UPDATE: {stale} stale");
        }
        let events = db.ledger.entries().events(&id).await?;
        let to: Vec<_> = events.iter().map(|e| e.to_state).collect();
        ensure!(to == [EntryState::Reserved, EntryState::Forwarded, EntryState::Settling], "{to:?}");
        eprintln!("[{}] transition race: 1 win, {stale} stale, {same_hash} not a replacement", db.engine);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lease_takers_have_one_winner() {
    // Goal: 50 holders racing for one free lease (through two pools): exactly one gets it.
    each_engine(|db| async move {
        let replica = Ledger::connect(&db.url, test_options()).await?;
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let ledger = if i % 2 == 0 { db.ledger.clone() } else { replica.clone() };
            tasks.push(tokio::spawn(async move {
                ledger.leases().try_acquire("relayer:8453", &format!("gw-{i}"), 30, 1_000).await
            }));
        }
        let mut taken = 0;
        for task in tasks {
            if task.await?? {
                taken += 1;
            }
        }
        ensure!(taken == 1, "{taken} holders got the lease");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_one_winner() {
    // Goal: 50 concurrent `transition_from(forwarded, settling(tx_i))` claims with *different* hashes (what racing settlement workers do) yield exactly one `true`; all others get `false` and append no event, although settling -> settling would be a legal replacement.
    each_engine(|db| async move {
        let id = crate::entry_in(&db.ledger, EntryState::Forwarded, 1, 100).await?;
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let (ledger, id) = (db.ledger.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let t = Transition::Settling { tx_hash: hash(1_000 + i as u64) };
                ledger.entries().transition_from(&id, EntryState::Forwarded, t, "claim", None, 200).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            if task.await?? {
                won += 1;
            }
        }
        ensure!(won == 1, "claims won: {won}");
        let events = db.ledger.entries().events(&id).await?;
        ensure!(events.iter().filter(|e| e.to_state == EntryState::Settling).count() == 1);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_a_group_commit_fails_alone() {
    // Goal: 50 concurrent reservations of 25 authorizations (two each; on SQLite they are committed in groups, a duplicate sharing a transaction with other calls' rows) give 25 entries with their events and 25 DuplicateAuthorization answers; then 50 concurrent transitions of those entries all apply.
    each_engine(|db| async move {
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let ledger = db.ledger.clone();
            let n = 1_000 + (i / 2) as u64;
            tasks.push(tokio::spawn(async move { ledger.entries().reserve(&new_entry(n, 1_000, 100)).await }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await? {
                Ok(id) => winners.push(id),
                Err(MeteringError::DuplicateAuthorization { .. }) => {}
                Err(other) => anyhow::bail!("unexpected error: {other}"),
            }
        }
        ensure!(winners.len() == RACERS / 2, "winners: {}", winners.len());
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_entries").await == (RACERS / 2) as i64);
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == (RACERS / 2) as i64);
        let mut moves = Vec::new();
        for id in winners.clone().into_iter().chain(winners.clone()) {
            let ledger = db.ledger.clone();
            moves.push(tokio::spawn(async move {
                let t = Transition::Forwarded { upstream_status: Some(200) };
                ledger.entries().transition_from(&id, EntryState::Reserved, t, "upstream_ok", None, 101).await
            }));
        }
        let mut applied = 0;
        for m in moves {
            applied += usize::from(m.await??);
        }
        ensure!(applied == RACERS / 2, "each entry moved once, got {applied}");
        ensure!(
            db.raw.count("SELECT COUNT(*) FROM ledger_entries WHERE state = 'forwarded'").await == (RACERS / 2) as i64
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_in_a_group_commit_is_undone_alone() {
    // Goal: on SQLite (where writes are committed in groups) a reservation refused by the database itself (a trigger here; not a duplicate, so its savepoint is rolled back) fails alone with a database error while 19 concurrent reservations commit with their events; on PostgreSQL the same holds per connection.
    each_engine(|db| async move {
        db.refuse_writes("refuse_4242", "INSERT", "NEW.amount = 4242").await?;
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let ledger = db.ledger.clone();
            let amount = if i == 7 { 4_242 } else { 1_000 };
            tasks.push(tokio::spawn(async move { ledger.entries().reserve(&new_entry(2_000 + i, amount, 100)).await }));
        }
        let (mut ok, mut refused) = (0, 0);
        for task in tasks {
            match task.await? {
                Ok(_) => ok += 1,
                Err(MeteringError::Database { reason, .. }) if reason.contains("refused by test") => refused += 1,
                Err(other) => anyhow::bail!("unexpected error: {other}"),
            }
        }
        ensure!(ok == 19 && refused == 1, "ok {ok}, refused {refused}");
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_entries").await == 19);
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == 19, "the refused row left no event");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claim_is_all_or_nothing() {
    // Goal: a batch claim moves every entry to `settling` with the one transaction hash and an event each; a batch with one entry no longer `forwarded` (settled meanwhile) writes nothing at all; two racing batch claims over overlapping entries have one winner, and no entry ends with the loser's hash.
    each_engine(|db| async move {
        let entries = db.ledger.entries();
        let mut ids = Vec::new();
        for n in 1..=4 {
            ids.push(crate::entry_in(&db.ledger, EntryState::Forwarded, n, 100).await?);
        }
        let detail = r#"{"relayer":"0x0000000000000000000000000000000000000009","nonce":7}"#;
        ensure!(entries.claim_batch(&ids, EntryState::Forwarded, hash(500), "batch_claim", Some(detail), 200).await?);
        for id in &ids {
            let e = entries.get(id).await?.expect("entry");
            ensure!(e.state == EntryState::Settling && e.tx_hash == Some(hash(500)), "{e:?}");
            let events = entries.events(id).await?;
            let claim = events.last().expect("event");
            ensure!(
                claim.tx_hash == Some(hash(500))
                    && claim.cause == "batch_claim"
                    && claim.detail.as_deref() == Some(detail)
            );
        }

        // One of five already settled: none of the others is claimed, no event is written.
        let mut mixed = Vec::new();
        for n in 10..=13 {
            mixed.push(crate::entry_in(&db.ledger, EntryState::Forwarded, n, 100).await?);
        }
        mixed.push(crate::entry_in(&db.ledger, EntryState::Settled, 14, 100).await?);
        let before = db.raw.count("SELECT COUNT(*) FROM ledger_events").await;
        ensure!(!entries.claim_batch(&mixed, EntryState::Forwarded, hash(501), "batch_claim", None, 200).await?);
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == before);
        for id in &mixed[..4] {
            ensure!(entries.get(id).await?.expect("entry").state == EntryState::Forwarded);
        }

        // Racing batches over the same entries (in different orders): exactly one wins.
        let mut racers = Vec::new();
        for i in 0..10u64 {
            let (ledger, mut ids) = (db.ledger.clone(), mixed[..4].to_vec());
            if i % 2 == 1 {
                ids.reverse();
            }
            racers.push(tokio::spawn(async move {
                ledger.entries().claim_batch(&ids, EntryState::Forwarded, hash(600 + i), "batch_claim", None, 300).await
            }));
        }
        let mut won = Vec::new();
        for (i, task) in racers.into_iter().enumerate() {
            if task.await?? {
                won.push(hash(600 + i as u64));
            }
        }
        ensure!(won.len() == 1, "winners: {won:?}");
        for id in &mixed[..4] {
            ensure!(entries.get(id).await?.expect("entry").tx_hash == Some(won[0]));
        }

        // Bad input is refused before the database is asked.
        let err =
            entries.claim_batch(&[], EntryState::Forwarded, hash(700), "batch_claim", None, 300).await.unwrap_err();
        ensure!(matches!(err, MeteringError::InvalidValue { what: "ids", .. }), "{err:?}");
        let twice = vec![ids[0].clone(), ids[0].clone()];
        let err =
            entries.claim_batch(&twice, EntryState::Settling, hash(700), "batch_claim", None, 300).await.unwrap_err();
        ensure!(matches!(err, MeteringError::InvalidValue { what: "ids", .. }), "{err:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_owed_back_is_one_write() {
    // Goal: `settle_owing` moves a `settling` entry to `settled` and on to `refund_owed` in one database transaction, with an event each; on an entry no longer `settling` it writes nothing; a transition that is not a settlement is refused; and when the database refuses the refund half (a trigger), the entry stays `settling` with no new event: never `settled` with the refund forgotten.
    each_engine(|db| async move {
        let entries = db.ledger.entries();
        let id = crate::entry_in(&db.ledger, EntryState::Settling, 1, 100).await?;
        ensure!(entries.settle_owing(&id, &crate::settled(1), "recovery_delivery_failed", "recovery", 200).await?);
        let e = entries.get(&id).await?.expect("entry");
        ensure!(e.state == EntryState::RefundOwed, "{e:?}");
        ensure!(e.reason.as_deref() == Some("recovery_delivery_failed"), "{e:?}");
        ensure!(e.tx_hash == Some(hash(1)) && e.block_number == Some(1_001) && e.log_index == Some(1), "{e:?}");
        let events = entries.events(&id).await?;
        let moves: Vec<_> =
            events.iter().rev().take(2).map(|ev| (ev.from_state, ev.to_state, ev.cause.clone())).collect();
        ensure!(
            moves
                == vec![
                    (Some(EntryState::Settled), EntryState::RefundOwed, "recovery".to_owned()),
                    (Some(EntryState::Settling), EntryState::Settled, "recovery".to_owned()),
                ],
            "{moves:?}"
        );

        // Already recorded (by another writer): nothing more.
        let before = db.raw.count("SELECT COUNT(*) FROM ledger_events").await;
        ensure!(!entries.settle_owing(&id, &crate::settled(1), "recovery_delivery_failed", "recovery", 300).await?);
        let settled = crate::entry_in(&db.ledger, EntryState::Settled, 2, 100).await?;
        let before_settled = db.raw.count("SELECT COUNT(*) FROM ledger_events").await;
        ensure!(before_settled > before);
        ensure!(!entries.settle_owing(&settled, &crate::settled(2), "upstream_failed", "recovery", 300).await?);
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == before_settled);
        let void = Transition::Voided { reason: "x".to_owned() };
        let err = entries.settle_owing(&settled, &void, "upstream_failed", "recovery", 300).await.unwrap_err();
        ensure!(matches!(err, MeteringError::InvalidValue { what: "settled", .. }), "{err:?}");

        // The database refuses the refund: the settlement is not written either.
        db.refuse_writes("refuse_owed", "UPDATE", "NEW.state = 'refund_owed'").await?;
        let third = crate::entry_in(&db.ledger, EntryState::Settling, 3, 100).await?;
        let before = db.raw.count("SELECT COUNT(*) FROM ledger_events").await;
        let refused =
            entries.settle_owing(&third, &crate::settled(3), "recovery_delivery_failed", "recovery", 400).await;
        ensure!(refused.is_err(), "{refused:?}");
        let e = entries.get(&third).await?.expect("entry");
        ensure!(e.state == EntryState::Settling && e.block_number.is_none(), "{e:?}");
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_events").await == before);
        Ok(())
    })
    .await;
}
