//! The schema's half of the invariants, exercised with raw SQL that bypasses the ledger.

use anyhow::ensure;
use tollgate_metering::EntryState;

use crate::{each_engine, entry_in, new_entry};

const TX: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";
const BLOCK: &str = "0x2222222222222222222222222222222222222222222222222222222222222222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_allows_exactly_the_transition_table() {
    // Goal: for all 7x7 state pairs, a raw UPDATE of the state succeeds exactly when EntryState::can_go_to allows it; the trigger rejects the rest.
    each_engine(|db| async move {
        let mut n = 0;
        for from in EntryState::ALL {
            n += 1;
            let id = entry_in(&db.ledger, from, n, 100).await?;
            for to in EntryState::ALL {
                // Settlement columns are filled so that only the transition rule can refuse;
                // settled -> settling (a reorg) must clear the block instead.
                let sql = if (from, to) == (EntryState::Settled, EntryState::Settling) {
                    let kept = format!("UPDATE ledger_entries SET state = 'settling' WHERE id = '{id}'");
                    let err = db.raw.exec_rolled_back(&kept).await.err().unwrap_or_default();
                    ensure!(
                        err.contains("only clears a reorged block"),
                        "settled -> settling keeping its block: {err}"
                    );
                    format!(
                        "UPDATE ledger_entries SET state = 'settling', block_number = NULL, block_hash = NULL, \
                         log_index = NULL WHERE id = '{id}'"
                    )
                } else {
                    format!(
                        "UPDATE ledger_entries SET state = '{to}', tx_hash = COALESCE(tx_hash, '{TX}'), \
                         block_number = COALESCE(block_number, 1), block_hash = COALESCE(block_hash, '{BLOCK}'), \
                         log_index = COALESCE(log_index, 0) WHERE id = '{id}'"
                    )
                };
                let result = db.raw.exec_rolled_back(&sql).await;
                if from.can_go_to(to) {
                    ensure!(result == Ok(1), "{from} -> {to} should pass the trigger: {result:?}");
                } else {
                    let err = result.err().unwrap_or_default();
                    ensure!(err.contains("illegal state transition"), "{from} -> {to} should be refused: {err}");
                }
            }
        }
        // Other columns cannot be edited in place either: that is a same-state update.
        let id = entry_in(&db.ledger, EntryState::Settled, 100, 100).await?;
        let err = db.raw.exec(&format!("UPDATE ledger_entries SET block_number = 7 WHERE id = '{id}'")).await;
        ensure!(err.as_ref().is_err_and(|e| e.contains("illegal state transition")), "{err:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_born_reserved_and_never_deleted() {
    // Goal: raw SQL cannot insert an entry in a later state, nor delete an entry (which would free its authorization).
    each_engine(|db| async move {
        let id = entry_in(&db.ledger, EntryState::Voided, 1, 100).await?;
        let insert = db.raw.exec(&insert_sql("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 2, "1000", "settled")).await;
        ensure!(insert.as_ref().is_err_and(|e| e.contains("inserted in state reserved")), "{insert:?}");
        let ok = db.raw.exec_rolled_back(&insert_sql("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 2, "1000", "reserved")).await;
        ensure!(ok == Ok(1), "a well-formed reserved row is accepted: {ok:?}");
        let delete = db.raw.exec(&format!("DELETE FROM ledger_entries WHERE id = '{id}'")).await;
        ensure!(delete.as_ref().is_err_and(|e| e.contains("never deleted")), "{delete:?}");
        ensure!(db.ledger.entries().get(&id).await?.is_some());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_append_only() {
    // Goal: raw UPDATE and DELETE on ledger_events fail, so history cannot be rewritten.
    each_engine(|db| async move {
        let id = entry_in(&db.ledger, EntryState::Forwarded, 1, 100).await?;
        for sql in [
            format!("UPDATE ledger_events SET cause = 'rewritten' WHERE entry_id = '{id}'"),
            format!("UPDATE ledger_events SET at_unix_s = 0 WHERE entry_id = '{id}'"),
            format!("DELETE FROM ledger_events WHERE entry_id = '{id}'"),
            "DELETE FROM ledger_events".to_owned(),
        ] {
            let result = db.raw.exec(&sql).await;
            ensure!(result.as_ref().is_err_and(|e| e.contains("append-only")), "{sql}: {result:?}");
        }
        if db.engine == tollgate_metering::Engine::Postgres {
            let result = db.raw.exec("TRUNCATE ledger_events").await;
            ensure!(result.as_ref().is_err_and(|e| e.contains("append-only")), "truncate: {result:?}");
        }
        let events = db.ledger.entries().events(&id).await?;
        ensure!(events.len() == 2 && events.iter().all(|e| e.cause != "rewritten"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_columns_are_immutable() {
    // Goal: raw SQL cannot change the authorization's columns (chain, asset, payer, nonce, amount, payee, payment, ...), even together with a legal state change.
    each_engine(|db| async move {
        let id = entry_in(&db.ledger, EntryState::Reserved, 1, 100).await?;
        let changes = [
            "chain_id = 1",
            "asset = '0x0000000000000000000000000000000000000001'",
            "payer = '0x0000000000000000000000000000000000000001'",
            "nonce = '0x0000000000000000000000000000000000000000000000000000000000000077'",
            "amount = 1",
            "pay_to = '0x0000000000000000000000000000000000000001'",
            "payment = '{}'",
            "valid_before_unix_s = 1",
            "mode = 'before'",
            "provider = 'other'",
            "created_unix_s = 1",
            "id = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'",
        ];
        for change in changes {
            let sql = format!("UPDATE ledger_entries SET {change}, state = 'forwarded' WHERE id = '{id}'");
            let result = db.raw.exec(&sql).await;
            ensure!(result.as_ref().is_err_and(|e| e.contains("immutable")), "{change}: {result:?}");
        }
        // The same legal state change alone goes through.
        ensure!(
            db.raw.exec_rolled_back(&format!("UPDATE ledger_entries SET state = 'forwarded' WHERE id = '{id}'")).await
                == Ok(1)
        );
        let entry = db.ledger.entries().get(&id).await?.unwrap();
        ensure!(entry == db.ledger.entries().get(&id).await?.unwrap() && entry.state == EntryState::Reserved);
        ensure!(entry.amount.get() == new_entry(1, 1_000, 100).amount.get());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_reject_bad_money_rows() {
    // Goal: the schema's CHECKs refuse a zero or negative amount, a settling/settled entry without its transaction or block, and a non-lowercase address (which would dodge the UNIQUE guard).
    each_engine(|db| async move {
        for (amount, constraint) in [("0", "ledger_entries_amount_positive"), ("-5", "ledger_entries_amount_positive")] {
            let result = db.raw.exec(&insert_sql("cccccccccccccccccccccccccccccccc", 3, amount, "reserved")).await;
            ensure!(result.as_ref().is_err_and(|e| e.contains(constraint)), "amount {amount}: {result:?}");
        }
        let reserved = entry_in(&db.ledger, EntryState::Reserved, 1, 100).await?;
        let result = db.raw.exec(&format!("UPDATE ledger_entries SET state = 'settling' WHERE id = '{reserved}'")).await;
        ensure!(result.as_ref().is_err_and(|e| e.contains("ledger_entries_settling_has_tx")), "{result:?}");

        let settling = entry_in(&db.ledger, EntryState::Settling, 2, 100).await?;
        let result = db.raw.exec(&format!("UPDATE ledger_entries SET state = 'settled' WHERE id = '{settling}'")).await;
        ensure!(result.as_ref().is_err_and(|e| e.contains("ledger_entries_settled_has_block")), "{result:?}");
        let result = db
            .raw
            .exec(&format!(
                "UPDATE ledger_entries SET state = 'settled', block_number = 5, block_hash = '{BLOCK}' WHERE id = '{settling}'"
            ))
            .await;
        ensure!(result.as_ref().is_err_and(|e| e.contains("ledger_entries_settled_has_block")), "no log index: {result:?}");

        let mixed_case = insert_sql("dddddddddddddddddddddddddddddddd", 4, "10", "reserved")
            .replace("0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", "0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1");
        let result = db.raw.exec(&mixed_case).await;
        ensure!(result.as_ref().is_err_and(|e| e.contains("ledger_entries_payer_hex")), "{result:?}");
        let bad_state = db.raw.exec(&format!("UPDATE ledger_entries SET state = 'paid' WHERE id = '{reserved}'")).await;
        ensure!(bad_state.is_err(), "{bad_state:?}");
        Ok(())
    })
    .await;
}

/// A raw INSERT of an entry with the given id, nonce number, amount literal and state.
fn insert_sql(id: &str, nonce: u64, amount: &str, state: &str) -> String {
    format!(
        "INSERT INTO ledger_entries (id, chain_id, asset, payer, pay_to, nonce, amount, valid_before_unix_s, \
         provider, route, method, path, mode, state, tx_hash, block_number, block_hash, log_index, payment, \
         created_unix_s, updated_unix_s, last_cause) VALUES ('{id}', 8453, '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913', \
         '0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', '0xb2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', '0x{nonce:064x}', \
         {amount}, 400, 'openai', 'chat', 'POST', '/v1', 'after', '{state}', '{TX}', 1, '{BLOCK}', 0, '{{}}', 100, 100, 'reserved')"
    )
}

// Goal: a SQLite ledger file the ledger creates is readable by its owner only, and so are the
// -wal and -shm files SQLite makes beside it once something is written (they take the
// database file's mode); an existing file keeps the mode its operator gave it.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_ledger_files_are_created_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let ledger = tollgate_metering::Ledger::connect(&url, tollgate_metering::LedgerOptions::default()).await.unwrap();
    ledger.entries().reserve(&new_entry(1, 10, 100)).await.unwrap();
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
    for name in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    drop(ledger);

    let existing = dir.path().join("shared.db");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
    let url = format!("sqlite://{}?mode=rwc", existing.display());
    tollgate_metering::Ledger::connect(&url, tollgate_metering::LedgerOptions::default()).await.unwrap();
    assert_eq!(mode("shared.db"), 0o640);
}
