//! SQLite's write-ahead log stays bounded under sustained writes (issue 17, item 5).

use std::time::Duration;

use anyhow::ensure;
use tollgate_metering::SQLITE_WAL_BYTES_MAX;

use crate::{Raw, each_engine, new_entry};

/// The WAL file's size now (0 when absent).
fn wal_bytes(url: &str) -> u64 {
    let db_path = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default();
    std::fs::metadata(format!("{db_path}-wal")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_cut_back_after_a_reader_held_it() {
    // Goal: a WAL grown past its bound while a long read held every checkpoint back (the log cannot start over under a reader) is cut back under `SQLITE_WAL_BYTES_MAX` once the reader ends, with no further write to trigger it: the metering layer checkpoints on its own. SQLite only (PostgreSQL's WAL is the server's).
    each_engine(|db| async move {
        let Raw::Sqlite(raw) = &db.raw else { return Ok(()) };
        // A read transaction holding its snapshot: no checkpoint can pass it.
        let mut reader = raw.begin().await?;
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries").fetch_one(&mut *reader).await?;
        // Write until the log is well past its bound (one commit per reservation here).
        let mut n = 0;
        while wal_bytes(&db.url) <= 2 * SQLITE_WAL_BYTES_MAX {
            ensure!(n < 50_000, "the WAL never grew past twice its bound: {} bytes", wal_bytes(&db.url));
            n += 1;
            db.ledger.entries().reserve(&new_entry(n, 10, 100)).await?;
        }
        let grown = wal_bytes(&db.url);
        reader.rollback().await?;
        // The task looks every second; waiting is bounded (this asserts the size, not a speed).
        for _ in 0..200 {
            if wal_bytes(&db.url) <= SQLITE_WAL_BYTES_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = wal_bytes(&db.url);
        ensure!(after <= SQLITE_WAL_BYTES_MAX, "WAL {after} bytes after the reader ended (grown to {grown})");
        // Nothing was lost: every reservation is there.
        ensure!(raw_count(raw).await? == i64::try_from(n)?);
        Ok(())
    })
    .await;
}

async fn raw_count(raw: &sqlx::SqlitePool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries").fetch_one(raw).await?)
}
