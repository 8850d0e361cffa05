//! The entry lifecycle through the public API: transitions, events, duplicates, Rust-side
//! rejection of illegal transitions, migrations and time limits.

use anyhow::ensure;
use tollgate_metering::{EntryState, Ledger, LedgerOptions, MeteringError, Transition};

use crate::{CHAIN_ID, asset, each_engine, entry_in, hash, new_entry, nonce, pay_to, payer, settled, test_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_forward_settle_records_every_step() {
    // Goal: reserved -> forwarded -> settling -> settling (replacement) -> settled stores each step's data and appends one event per step, in order.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let id = ledger.entries().reserve(&new_entry(1, 10_000, 100)).await?;
        let entry = ledger.entries().get(&id).await?.expect("reserved entry");
        ensure!(entry.state == EntryState::Reserved && entry.created_unix_s == 100 && entry.updated_unix_s == 100);
        ensure!(
            entry.asset == asset() && entry.payer == payer() && entry.pay_to == pay_to() && entry.nonce == nonce(1)
        );
        ensure!(entry.amount.get() == 10_000 && entry.valid_before_unix_s == 400 && entry.chain_id == CHAIN_ID);
        ensure!(entry.payment == new_entry(1, 10_000, 100).payment, "payment stored verbatim");

        let forwarded = ledger
            .entries()
            .transition(&id, Transition::Forwarded { upstream_status: Some(200) }, "upstream_ok", None, 101)
            .await?;
        ensure!(forwarded.state == EntryState::Forwarded && forwarded.upstream_status == Some(200));
        ensure!(forwarded.updated_unix_s == 101 && forwarded.created_unix_s == 100);

        ledger.entries().transition(&id, Transition::Settling { tx_hash: hash(1) }, "settle_sent", None, 102).await?;
        let same =
            ledger.entries().transition(&id, Transition::Settling { tx_hash: hash(1) }, "settle_sent", None, 103).await;
        ensure!(matches!(same, Err(MeteringError::NotAReplacement { .. })), "same hash is no replacement: {same:?}");
        let replaced = ledger
            .entries()
            .transition(&id, Transition::Settling { tx_hash: hash(2) }, "fee_bump", Some(r#"{"gwei":3}"#), 104)
            .await?;
        ensure!(replaced.tx_hash == Some(hash(2)));

        let done = ledger.entries().transition(&id, settled(2), "receipt", None, 105).await?;
        ensure!(done.state == EntryState::Settled && done.tx_hash == Some(hash(2)));
        ensure!(done.block_number == Some(1_002) && done.block_hash == Some(hash(502)) && done.log_index == Some(2));
        ensure!(done.upstream_status == Some(200), "earlier columns are kept");
        ensure!(ledger.entries().get(&id).await?.as_ref() == Some(&done));
        ensure!(ledger.entries().by_authorization(CHAIN_ID, asset(), payer(), nonce(1)).await?.as_ref() == Some(&done));

        let events = ledger.entries().events(&id).await?;
        let steps: Vec<_> = events.iter().map(|e| (e.from_state, e.to_state, e.cause.as_str(), e.at_unix_s)).collect();
        ensure!(
            steps
                == [
                    (None, EntryState::Reserved, "reserved", 100),
                    (Some(EntryState::Reserved), EntryState::Forwarded, "upstream_ok", 101),
                    (Some(EntryState::Forwarded), EntryState::Settling, "settle_sent", 102),
                    (Some(EntryState::Settling), EntryState::Settling, "fee_bump", 104),
                    (Some(EntryState::Settling), EntryState::Settled, "receipt", 105),
                ],
            "events: {steps:?}"
        );
        ensure!(events.windows(2).all(|w| w[0].id < w[1].id) && events.iter().all(|e| e.entry_id == id));
        // The replaced hash stays on record in the events.
        let hashes: Vec<_> = events.iter().map(|e| e.tx_hash).collect();
        ensure!(hashes == [None, None, Some(hash(1)), Some(hash(2)), Some(hash(2))], "{hashes:?}");
        ensure!(events[3].detail.as_deref() == Some(r#"{"gwei":3}"#));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_are_rejected_in_rust() {
    // Goal: from every state, every transition the table forbids fails with IllegalTransition and changes nothing; unknown ids are NotFound.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let attempts = [
            Transition::Forwarded { upstream_status: Some(200) },
            Transition::Settling { tx_hash: hash(99) },
            crate::settled(99),
            Transition::SettleFailed { reason: "x".to_owned() },
            Transition::Voided { reason: "x".to_owned() },
            Transition::RefundOwed { reason: "x".to_owned() },
        ];
        let mut n = 0;
        for from in EntryState::ALL {
            n += 1;
            let id = entry_in(&ledger, from, n, 100).await?;
            let before = ledger.entries().get(&id).await?;
            let events_before = ledger.entries().events(&id).await?.len();
            for t in &attempts {
                let to = t.to_state();
                if from.can_go_to(to) {
                    continue;
                }
                let result = ledger.entries().transition(&id, t.clone(), "illegal", None, 200).await;
                match result {
                    Err(MeteringError::IllegalTransition { id: got, from: f, to: tt }) => {
                        ensure!(got == id && f == from && tt == to)
                    }
                    other => anyhow::bail!("{from} -> {to}: expected IllegalTransition, got {other:?}"),
                }
            }
            ensure!(ledger.entries().get(&id).await? == before, "{from}: entry unchanged");
            ensure!(ledger.entries().events(&id).await?.len() == events_before, "{from}: no event appended");
        }
        let unknown = "0123456789abcdef0123456789abcdef".parse()?;
        let result =
            ledger.entries().transition(&unknown, Transition::Voided { reason: "x".to_owned() }, "void", None, 1).await;
        ensure!(matches!(result, Err(MeteringError::NotFound { .. })), "{result:?}");
        ensure!(ledger.entries().get(&unknown).await?.is_none());
        ensure!(ledger.entries().events(&unknown).await?.is_empty());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_reservation_names_the_existing_entry() {
    // Goal: a second reservation of the same authorization fails with DuplicateAuthorization carrying the existing id and its current state; a different nonce or payer is a different authorization.
    each_engine(|db| async move {
        let ledger = db.ledger;
        let id = ledger.entries().reserve(&new_entry(1, 1_000, 100)).await?;
        let again = ledger.entries().reserve(&new_entry(1, 1_000, 101)).await;
        match again {
            Err(MeteringError::DuplicateAuthorization { existing, state }) => {
                ensure!(existing == id && state == EntryState::Reserved)
            }
            other => anyhow::bail!("expected DuplicateAuthorization, got {other:?}"),
        }
        ledger
            .entries()
            .transition(&id, Transition::Voided { reason: "upstream 503".to_owned() }, "upstream_5xx", None, 102)
            .await?;
        // Even a voided authorization stays spent: it could be settled by anyone holding it.
        let mut other_amount = new_entry(1, 5, 103);
        other_amount.route = "other".to_owned();
        match ledger.entries().reserve(&other_amount).await {
            Err(MeteringError::DuplicateAuthorization { existing, state }) => {
                ensure!(existing == id && state == EntryState::Voided)
            }
            other => anyhow::bail!("expected DuplicateAuthorization, got {other:?}"),
        }
        ledger.entries().reserve(&new_entry(2, 1_000, 104)).await?;
        let mut other_payer = new_entry(1, 1_000, 105);
        other_payer.payer = alloy_primitives::Address::repeat_byte(0xC3);
        ledger.entries().reserve(&other_payer).await?;
        ensure!(db.raw.count("SELECT COUNT(*) FROM ledger_entries").await == 3);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent() {
    // Goal: connecting again to a migrated database applies nothing new and keeps the data; Debug output never shows the URL.
    each_engine(|db| async move {
        let id = db.ledger.entries().reserve(&new_entry(1, 1_000, 100)).await?;
        let second = Ledger::connect(&db.url, test_options()).await?;
        let third = Ledger::connect(&db.url, test_options()).await?;
        ensure!(second.engine() == db.engine && third.engine() == db.engine);
        ensure!(third.entries().get(&id).await?.is_some());
        // As many as there are migration files (both engines have the same set), so a branch
        // adding one does not edit this line.
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite"))?
            .filter(|f| f.as_ref().is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".sql")))
            .count();
        let applied = db.raw.count("SELECT COUNT(*) FROM _sqlx_migrations").await;
        ensure!(usize::try_from(applied)? == files, "each migration applied once: {applied} of {files}");
        let debug = format!("{second:?}");
        ensure!(!debug.contains(&db.url) && !debug.contains("127.0.0.1") && !debug.contains("ledger.db"), "{debug}");
        second.close().await;
        third.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_while_the_database_is_locked() {
    // Goal: a call blocked by another writer's lock ends with a retryable Timeout after the configured limit, and works again once the lock is gone.
    each_engine(|db| async move {
        let opts = LedgerOptions { statement_timeout_ms: 200, acquire_timeout_ms: 1_000, ..test_options() };
        let ledger = Ledger::connect(&db.url, opts).await?;
        let started = std::time::Instant::now();
        let result = match &db.raw {
            crate::Raw::Sqlite(pool) => {
                let lock = pool.begin_with("BEGIN IMMEDIATE").await?;
                let result = ledger.entries().reserve(&new_entry(1, 1_000, 100)).await;
                lock.rollback().await?;
                result
            }
            crate::Raw::Postgres(pool) => {
                let mut lock = pool.begin().await?;
                sqlx::query("LOCK TABLE ledger_entries IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await?;
                let result = ledger.entries().reserve(&new_entry(1, 1_000, 100)).await;
                lock.rollback().await?;
                result
            }
        };
        let elapsed = started.elapsed();
        match &result {
            // 200 ms is the statement limit (PostgreSQL's statement_timeout, SQLite's busy_timeout),
            // not the 1.2 s outer bound: the database itself gave up.
            Err(e @ MeteringError::Timeout { op: "reserve", timeout_ms: 200 }) => ensure!(e.is_retryable()),
            other => anyhow::bail!("expected a reserve Timeout, got {other:?}"),
        }
        ensure!(elapsed < std::time::Duration::from_secs(3), "took {elapsed:?}");
        ledger.entries().reserve(&new_entry(1, 1_000, 100)).await?;
        Ok(())
    })
    .await;
}
