//! SQLite's write-ahead log kept bounded under sustained load.
//!
//! SQLite checkpoints its WAL on its own (every 1,000 pages), but it only starts the file over
//! when no reader still uses the log, and it never shrinks the file: under a steady mix of
//! reads and group commits the log can go on growing (26–58 MiB in issue 17's 60 s deferred
//! runs). Two bounds hold it: `journal_size_limit` ([`WAL_BYTES_MAX`], set on every
//! connection by [`crate::db`]) cuts the file back each time the log starts over, and this
//! task looks every [`CHECKPOINT_INTERVAL`] at how many frames the log holds; past
//! [`WAL_FRAMES_TRUNCATE`] it takes the process's write gate (so no writer of this process
//! starts) and runs `PRAGMA wal_checkpoint(TRUNCATE)`, which waits at most [`READERS_WAIT`]
//! for readers to move to the newest snapshot, copies the log into the database and empties
//! the file. A busy attempt is left to the next tick.
//!
//! Must not: hold the write gate longer than one bounded checkpoint, change what a commit
//! guarantees (a checkpoint only copies committed pages), or keep the pool open after the
//! [`crate::db::Db`] handles are gone (it ends when its stop signal's sender is dropped).

use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::oneshot;

/// How often the task looks at the log's size.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The log frames (pages, 4 KiB each by default) past which the task truncates the log:
/// twice SQLite's own automatic checkpoint threshold, so a log that starts over normally is
/// left alone.
pub(crate) const WAL_FRAMES_TRUNCATE: i64 = 2_000;

/// `journal_size_limit`: the size the WAL file is cut back to whenever the log starts over.
pub const WAL_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// The longest the truncating checkpoint waits for readers (its connection's `busy_timeout`
/// while it holds the write gate); the connection's usual `busy_timeout` is restored after.
pub(crate) const READERS_WAIT: Duration = Duration::from_millis(50);

/// Starts the task on `pool`; it ends when `stop`'s sender is dropped or the pool is closed.
/// `busy_timeout_ms` is the connections' usual `busy_timeout`, restored after a checkpoint.
pub(crate) fn start(
    pool: SqlitePool,
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    busy_timeout_ms: u64,
    mut stop: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            if pool.is_closed() {
                return;
            }
            // Bounded as a whole: a checkpoint that cannot get a connection or the gate within
            // a tick's time is skipped, never queued behind.
            let outcome = tokio::time::timeout(CHECKPOINT_INTERVAL, once(&pool, &write_gate, busy_timeout_ms)).await;
            match outcome {
                Ok(Ok(_)) => {}
                // Safe to skip: the log only stays longer until the next tick; commits are
                // unaffected.
                Ok(Err(e)) => tracing::debug!(error = %e, "WAL checkpoint skipped"),
                Err(_) => tracing::debug!("WAL checkpoint skipped: no connection or write gate within a tick"),
            }
        }
    });
}

/// One look: returns whether the log was truncated.
async fn once(
    pool: &SqlitePool,
    write_gate: &tokio::sync::Mutex<()>,
    busy_timeout_ms: u64,
) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // (busy, frames in the log, frames checkpointed); a PASSIVE checkpoint waits for nobody.
    let (_, frames, _): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    if frames <= WAL_FRAMES_TRUNCATE {
        return Ok(false);
    }
    let _gate = write_gate.lock().await;
    sqlx::query(&format!("PRAGMA busy_timeout = {}", READERS_WAIT.as_millis())).execute(&mut *conn).await?;
    let truncated = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut *conn).await;
    // Restored before the connection goes back to the pool, whatever the checkpoint did.
    let restored = sqlx::query(&format!("PRAGMA busy_timeout = {busy_timeout_ms}")).execute(&mut *conn).await;
    if let Err(e) = restored {
        // A connection left with the short timeout must not serve callers: close it.
        drop(conn.detach());
        return Err(e);
    }
    let (busy, _, _) = truncated?;
    Ok(busy == 0)
}
