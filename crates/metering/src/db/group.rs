//! Group commit on SQLite: the money path's single-statement writes (a reservation's insert,
//! a transition's conditional update, a note) from concurrent calls are gathered by one writer
//! task and committed together, one transaction and one fsync for many calls. Each caller is
//! released only when the transaction holding its row has committed (durable with
//! `synchronous = FULL`), with its own statement's result: every job runs inside its own
//! savepoint, so a job whose statement fails (a duplicate authorization hitting the UNIQUE
//! key, a trigger's refusal) is rolled back alone and reports its own error, while the others
//! commit.
//!
//! A batch is what queued while the previous one committed, up to [`BATCH_JOBS_MAX`] jobs: no
//! timer, so a lone call waits for nobody, and under load the queue fills during each fsync.
//!
//! Must not: release a caller before its commit, let one job's failure undo another's row, or
//! hold SQLite's write lock without the process's write gate (other writers take the gate).

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::MeteringError;

/// Most jobs committed in one transaction.
pub(crate) const BATCH_JOBS_MAX: usize = 256;

/// Most jobs waiting for the writer; a caller beyond it waits for room (bounded by its call
/// budget).
const QUEUE_JOBS_MAX: usize = 4096;

/// A job's statement result, type-erased while it travels with the batch.
type Erased = Result<Box<dyn Any + Send>, MeteringError>;

/// A job's statement, type-erased.
type StatementFn = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Erased> + Send>;

/// Pins a closure's signature to the higher-ranked one a statement needs (closures do not
/// infer it from a later coercion).
pub(crate) fn statement_fn<F, T>(f: F) -> F
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, T> + Send,
{
    f
}

/// One statement to run inside the group's transaction, and where its caller waits.
struct Job {
    /// The caller's operation, named in the errors of the batch's own statements.
    op: &'static str,
    statement: StatementFn,
    reply: oneshot::Sender<Erased>,
}

/// `e` (an error of the batch's own statements) as the error of the caller's `op`.
fn for_op(e: &MeteringError, op: &'static str) -> MeteringError {
    match e.clone() {
        MeteringError::Timeout { timeout_ms, .. } => MeteringError::Timeout { op, timeout_ms },
        MeteringError::Database { reason, retryable, .. } => MeteringError::Database { op, reason, retryable },
        other => other,
    }
}

/// The handle callers queue jobs on. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the writer task on `pool`; it ends when every handle is dropped. `error` maps a
    /// driver error of the batch's own statements (BEGIN, SAVEPOINT, COMMIT).
    pub(crate) fn start(
        pool: SqlitePool,
        write_gate: Arc<tokio::sync::Mutex<()>>,
        error: impl Fn(sqlx::Error) -> MeteringError + Send + Sync + 'static,
    ) -> GroupCommit {
        let (tx, rx) = mpsc::channel(QUEUE_JOBS_MAX);
        tokio::spawn(writer(pool, write_gate, rx, error));
        GroupCommit { jobs: tx }
    }

    /// Runs `statement` in the next group's transaction and returns its result once that
    /// transaction has committed (or the batch's error if it did not); `map` turns the
    /// statement's driver error into the caller's.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        statement: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send + 'static,
        map: impl FnOnce(sqlx::Error) -> MeteringError + Send + 'static,
    ) -> Result<T, MeteringError> {
        let (reply, answer) = oneshot::channel::<Erased>();
        let statement: StatementFn = Box::new(statement_fn(move |conn| {
            Box::pin(async move {
                match statement(conn).await {
                    Ok(v) => Ok(Box::new(v) as Box<dyn Any + Send>),
                    Err(e) => Err(map(e)),
                }
            })
        }));
        let gone = || MeteringError::Database {
            op: "group_commit",
            reason: "the ledger's writer task has stopped".to_owned(),
            retryable: false,
        };
        self.jobs.send(Job { op, statement, reply }).await.map_err(|_| gone())?;
        let value = answer.await.map_err(|_| gone())??;
        value.downcast::<T>().map(|b| *b).map_err(|_| MeteringError::Database {
            op: "group_commit",
            reason: "a job's result came back with another type".to_owned(),
            retryable: false,
        })
    }
}

async fn writer(
    pool: SqlitePool,
    write_gate: Arc<tokio::sync::Mutex<()>>,
    mut rx: mpsc::Receiver<Job>,
    error: impl Fn(sqlx::Error) -> MeteringError + Send + Sync + 'static,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_JOBS_MAX);
    while rx.recv_many(&mut batch, BATCH_JOBS_MAX).await > 0 {
        let jobs = std::mem::take(&mut batch);
        let _gate = write_gate.lock().await;
        let mut replies = Vec::with_capacity(jobs.len());
        let mut statements = Vec::with_capacity(jobs.len());
        for job in jobs {
            // A caller that stopped waiting (its call budget ran out) before its group started
            // was told the write failed: it is not run. One that gives up while its group is
            // already running may still see its row committed after that answer (the ledger
            // write is then true and the sweep reads it; the caller treats a timeout as
            // unknown, never as "not written").
            if job.reply.is_closed() {
                tracing::warn!(op = job.op, "ledger write dropped from a group: its caller gave up waiting");
                continue;
            }
            replies.push((job.op, job.reply));
            statements.push(job.statement);
        }
        if statements.is_empty() {
            continue;
        }
        match run_batch(&pool, statements).await {
            Ok(results) => {
                for ((_, reply), result) in replies.into_iter().zip(results) {
                    // A caller that stopped waiting (its budget ran out) is gone: nothing to tell.
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let e = error(e);
                tracing::warn!(error = %e, jobs = replies.len(), "ledger group commit failed; its callers are told");
                for (op, reply) in replies {
                    let _ = reply.send(Err(for_op(&e, op)));
                }
            }
        }
    }
}

/// One transaction: every statement in its own savepoint (rolled back alone when it fails),
/// then one commit. On `Err` nothing of the batch is written: the transaction is dropped
/// (rolled back) or its commit failed (SQLite rolls it back).
async fn run_batch(pool: &SqlitePool, mut statements: Vec<StatementFn>) -> Result<Vec<Erased>, sqlx::Error> {
    // Alone in its group (a quiet gateway): the one statement in autocommit, one round trip
    // to SQLite's worker thread instead of five (BEGIN, SAVEPOINT, the statement, RELEASE,
    // COMMIT); a single statement is atomic and durable by itself, so nothing changes.
    if statements.len() == 1
        && let Some(statement) = statements.pop()
    {
        let mut conn = pool.acquire().await?;
        return Ok(vec![statement(&mut conn).await]);
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        sqlx::query("SAVEPOINT tollgate_job").execute(&mut *tx).await?;
        let result = statement(&mut tx).await;
        if result.is_err() {
            sqlx::query("ROLLBACK TO tollgate_job").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE tollgate_job").execute(&mut *tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}
