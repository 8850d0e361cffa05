//! The storage engine: the connection pools, the migrations, the time limit around every call,
//! the mapping of driver errors to [`MeteringError`], and [`db_call!`], the one way a
//! repository runs a statement.
//!
//! Owns the choice of engine (SQLite or PostgreSQL, from the URL), the per-engine connection
//! settings (WAL, busy timeout, foreign keys; a server-side statement timeout), SQLite's
//! in-process write gate, and the stored spelling of values ([`codec`]).
//!
//! Must not: know a table (the repositories in `crate::repo` own the SQL), parse the payment
//! the ledger stores, know HTTP, reach a chain, or put the database URL in an error or in
//! `Debug` output (hosted URLs carry passwords).
//!
//! Both engines run the same SQL text (SQLite accepts PostgreSQL's `$N` placeholders,
//! `RETURNING` and `ON CONFLICT`); [`db_call!`] expands one body per pool type, so there is no
//! `sqlx::Any`.

pub(crate) mod checkpoint;
pub(crate) mod codec;
pub(crate) mod group;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::MeteringError;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The database engine behind a [`crate::Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Embedded SQLite (`sqlite://path/to/file.db?mode=rwc`, `sqlite::memory:`). One process.
    Sqlite,
    /// PostgreSQL (`postgres://...`), shared by gateway replicas.
    Postgres,
}

impl Engine {
    /// The engine a URL names, from its scheme alone.
    pub fn from_url(url: &str) -> Result<Engine, MeteringError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Engine::Sqlite),
            Some("postgres" | "postgresql") => Ok(Engine::Postgres),
            _ => Err(MeteringError::InvalidUrl { reason: "expected a sqlite: or postgres:// URL".to_owned() }),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pool size and time limits. Every ledger call is bounded by
/// `acquire_timeout_ms + statement_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerOptions {
    /// Most connections open at once (an in-memory SQLite database always uses one).
    pub max_connections: u32,
    /// Longest wait for a free connection.
    pub acquire_timeout_ms: u64,
    /// Longest a call may run once it has a connection. Also PostgreSQL's `statement_timeout`
    /// and SQLite's `busy_timeout` (the wait for the write lock).
    pub statement_timeout_ms: u64,
    /// Longest the migrations at [`crate::Ledger::connect`] may take (including waiting for
    /// another replica's migration lock on PostgreSQL). On PostgreSQL each statement, the lock
    /// wait included, is also bounded by `statement_timeout_ms`.
    pub migrate_timeout_ms: u64,
    /// SQLite only: `synchronous = FULL` (true, the default) syncs the WAL on every commit,
    /// so a reservation survives a power cut; `NORMAL` (false) survives a process crash but
    /// may lose the last commits on power loss, for about half the write latency.
    pub sqlite_synchronous_full: bool,
}

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions {
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 5_000,
            migrate_timeout_ms: 60_000,
            sqlite_synchronous_full: true,
        }
    }
}

impl LedgerOptions {
    pub(crate) fn validate(&self) -> Result<(), MeteringError> {
        let refuse = |option, reason| Err(MeteringError::InvalidOptions { option, reason });
        if self.max_connections == 0 {
            return refuse("max_connections", "must be at least 1");
        }
        // Bounded so that the sums below, and the conversions to i64 milliseconds, cannot overflow.
        const DAY_MS: u64 = 86_400_000;
        for (option, value) in [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("migrate_timeout_ms", self.migrate_timeout_ms),
        ] {
            if value == 0 || value > DAY_MS {
                return refuse(option, "must be between 1 ms and one day");
            }
        }
        Ok(())
    }

    fn call_budget_ms(&self) -> u64 {
        self.acquire_timeout_ms.saturating_add(self.statement_timeout_ms)
    }
}

/// The pool of one engine. [`db_call!`] matches on it to type-check a body once per engine.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the database: the pool, the limits and SQLite's write gate. Cheap to clone;
/// clones share the pool and the gate. Every repository holds one.
///
/// On SQLite every write takes `write_gate` first: SQLite admits one writer at a time, and a
/// writer that finds the database locked sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...)
/// however soon the lock is free. Queueing the process's writers on a fair async lock instead
/// hands the lock over the moment the previous commit ends. Other processes on the same file
/// (the CLI) still meet the busy handler. PostgreSQL needs no gate (row locks, many replicas).
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: Pool,
    opts: LedgerOptions,
    pub(crate) write_gate: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: the money path's single-statement writes, committed in groups (see [`group`]).
    pub(crate) group: Option<group::GroupCommit>,
    /// SQLite file: the WAL checkpoint task ([`checkpoint`]) runs until the last clone of
    /// this handle is dropped.
    _checkpoint_stop: Option<Arc<tokio::sync::oneshot::Sender<()>>>,
}

impl fmt::Debug for Db {
    // By hand: the connect options inside the pools hold the URL's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("engine", &self.engine()).field("options", &self.opts).finish_non_exhaustive()
    }
}

/// Runs one ledger call on whichever engine the [`Db`] has: the body is type-checked once per
/// pool type, the whole call (waiting for a connection and SQLite's write gate included) is
/// bounded by the call budget, and driver errors become [`MeteringError`] naming `op`.
///
/// - `db_call!(db, OP, read |pool| future)`: one read; `future` is a sqlx call on `pool`
///   (`sqlx::query_as(SQL).bind(..).fetch_all(pool)`), awaited by the macro.
/// - `db_call!(db, OP, write |pool| future)`: one write statement that returns rows; takes
///   the write gate first.
/// - `db_call!(db, OP, execute |pool| query)`: one write statement (`sqlx::query(SQL).bind(..)`),
///   executed on `pool` after taking the write gate; yields the number of rows it changed.
/// - `db_call!(db, OP, tx |tx, err| body)`: a transaction. The macro takes the write gate and
///   opens `tx` (`BEGIN IMMEDIATE` on SQLite: the write lock up front, so a transaction that
///   reads and then writes cannot fail halfway with `BUSY_SNAPSHOT`); `body` is an expression
///   evaluated inside the bounded future, yielding `Result<T, MeteringError>`, that maps driver
///   errors with `err` and commits `tx` itself (dropping it rolls back).
/// - `db_call!(db, OP, gated |pool, begin, err| body)`: like `tx` but the body gets the pool
///   and the statement that opens a transaction, for a write that only sometimes needs one.
macro_rules! db_call {
    ($db:expr, $op:expr, read |$pool:ident| $fut:expr) => {
        $crate::db::db_call!(@mapped $db, $op, false, |$pool| $fut.await)
    };
    ($db:expr, $op:expr, write |$pool:ident| $fut:expr) => {
        $crate::db::db_call!(@mapped $db, $op, true, |$pool| $fut.await)
    };
    ($db:expr, $op:expr, execute |$pool:ident| $query:expr) => {
        $crate::db::db_call!(@mapped $db, $op, true, |$pool| {
            $query.execute($pool).await.map(|done| done.rows_affected())
        })
    };
    ($db:expr, $op:expr, tx |$tx:ident, $err:ident| $body:expr) => {
        $crate::db::db_call!(@engines $db, $op, true, |pool, begin, $err| {
            #[allow(unused_mut)]
            let mut $tx = pool.begin_with(begin).await.map_err($err)?;
            $body
        })
    };
    ($db:expr, $op:expr, gated |$pool:ident, $begin:ident, $err:ident| $body:expr) => {
        $crate::db::db_call!(@engines $db, $op, true, |$pool, $begin, $err| $body)
    };
    // The plumbing of the arms above. One statement whose driver error the macro maps.
    (@mapped $db:expr, $op:expr, $gate:literal, |$pool:ident| $fut:expr) => {
        $crate::db::db_call!(@engines $db, $op, $gate, |$pool, _begin, err| $fut.map_err(err))
    };
    // The body once per engine (each type-checked against its own pool type), under the call
    // budget; with `$gate`, SQLite's write gate is held around it. `$begin` is the engine's
    // statement that opens a write transaction, `$err` maps a driver error naming `op`.
    (@engines $db:expr, $op:expr, $gate:literal, |$pool:ident, $begin:ident, $err:ident| $body:expr) => {{
        let db: &$crate::db::Db = &$db;
        let op: &'static str = $op;
        let $err = |e: sqlx::Error| db.error(op, e);
        db.bounded(op, async {
            match &db.pool {
                $crate::db::Pool::Sqlite($pool) => {
                    let _gate = if $gate { Some(db.write_gate.lock().await) } else { None };
                    let $begin: &'static str = "BEGIN IMMEDIATE";
                    $body
                }
                $crate::db::Pool::Postgres($pool) => {
                    let $begin: &'static str = "BEGIN";
                    $body
                }
            }
        })
        .await
    }};
}
pub(crate) use db_call;

impl Db {
    /// Connects to the database the URL names and applies the migrations (idempotent).
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL` by default (a reservation must survive
    /// a power cut: it is the record that money may move; see
    /// [`LedgerOptions::sqlite_synchronous_full`]), foreign keys on and `busy_timeout` set to
    /// `statement_timeout_ms`. An in-memory SQLite database lives in one connection, never
    /// recycled. PostgreSQL connections get `statement_timeout` at startup.
    pub(crate) async fn connect(url: &str, opts: LedgerOptions) -> Result<Db, MeteringError> {
        opts.validate()?;
        let engine = Engine::from_url(url)?;
        let invalid_url = |e: sqlx::Error| MeteringError::InvalidUrl { reason: e.to_string() };
        let pool = match engine {
            Engine::Sqlite => {
                let in_memory = sqlite_url_is_in_memory(url);
                let mut connect = SqliteConnectOptions::from_str(url)
                    .map_err(invalid_url)?
                    .synchronous(if opts.sqlite_synchronous_full {
                        SqliteSynchronous::Full
                    } else {
                        SqliteSynchronous::Normal
                    })
                    .busy_timeout(Duration::from_millis(opts.statement_timeout_ms))
                    .foreign_keys(true);
                if !in_memory {
                    create_sqlite_file_private(&connect)?;
                }
                // No ping before each acquire: a connection to a local file cannot have been hung up
                // on, and the ping is one more round trip to the connection's worker thread on
                // every call.
                let mut pool = SqlitePoolOptions::new()
                    .acquire_timeout(Duration::from_millis(opts.acquire_timeout_ms))
                    .test_before_acquire(false);
                if in_memory {
                    // Every connection to `:memory:` would be a separate, empty database, and the
                    // database vanishes with its last connection: keep exactly one, forever.
                    pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
                } else {
                    // The WAL file is cut back to this size whenever the log starts over.
                    connect = connect
                        .journal_mode(SqliteJournalMode::Wal)
                        .pragma("journal_size_limit", checkpoint::WAL_BYTES_MAX.to_string());
                    pool = pool.max_connections(opts.max_connections);
                }
                let pool = bounded("connect", opts.call_budget_ms(), async {
                    pool.connect_with(connect).await.map_err(|e| db_error(engine, &opts, "connect", e))
                })
                .await?;
                Pool::Sqlite(pool)
            }
            Engine::Postgres => {
                let connect = PgConnectOptions::from_str(url)
                    .map_err(invalid_url)?
                    .application_name("tollgate")
                    .options([("statement_timeout", opts.statement_timeout_ms)]);
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(Duration::from_millis(opts.acquire_timeout_ms));
                let pool = bounded("connect", opts.call_budget_ms(), async {
                    pool.connect_with(connect).await.map_err(|e| db_error(engine, &opts, "connect", e))
                })
                .await?;
                Pool::Postgres(pool)
            }
        };
        let mut db = Db { pool, opts, write_gate: Arc::default(), group: None, _checkpoint_stop: None };
        db.migrate().await?;
        if let Pool::Sqlite(pool) = &db.pool {
            let opts = db.opts;
            let error = move |e| db_error(Engine::Sqlite, &opts, "group_commit", e);
            db.group = Some(group::GroupCommit::start(pool.clone(), db.write_gate.clone(), error));
            if !sqlite_url_is_in_memory(url) {
                let (stop, stopped) = tokio::sync::oneshot::channel();
                checkpoint::start(pool.clone(), db.write_gate.clone(), opts.statement_timeout_ms, stopped);
                db._checkpoint_stop = Some(Arc::new(stop));
            }
        }
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), MeteringError> {
        let migration = |e: sqlx::migrate::MigrateError| MeteringError::Migration { reason: e.to_string() };
        bounded("migrate", self.opts.migrate_timeout_ms, async {
            match &self.pool {
                Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await.map_err(migration),
                // Takes an advisory lock, so replicas starting together migrate one at a time.
                Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await.map_err(migration),
            }
        })
        .await
    }

    /// The database answers and its schema is the one this build migrates to (the newest
    /// embedded migration is applied). Returns the applied schema version.
    pub(crate) async fn schema_check(&self) -> Result<i64, MeteringError> {
        let applied: Option<i64> = db_call!(
            self,
            "schema_check",
            read | pool | {
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(pool)
            }
        )?;
        let expected = match self.pool {
            Pool::Sqlite(_) => SQLITE_MIGRATOR.iter().map(|m| m.version).max(),
            Pool::Postgres(_) => POSTGRES_MIGRATOR.iter().map(|m| m.version).max(),
        };
        match (applied, expected) {
            (Some(a), Some(e)) if a >= e => Ok(a),
            (a, e) => Err(MeteringError::Migration {
                reason: format!("schema at version {} but this build needs {}", a.unwrap_or(0), e.unwrap_or(0)),
            }),
        }
    }

    /// The engine behind this handle.
    pub(crate) fn engine(&self) -> Engine {
        match self.pool {
            Pool::Sqlite(_) => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }

    /// Closes the pool: waits for calls in progress, then closes every connection (the WAL
    /// checkpoint task sees the pool closed and ends).
    pub(crate) async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// The error a failed driver call of `op` becomes.
    pub(crate) fn error(&self, op: &'static str, e: sqlx::Error) -> MeteringError {
        db_error(self.engine(), &self.opts, op, e)
    }

    /// Runs `call` within the call budget (`acquire_timeout_ms + statement_timeout_ms`).
    pub(crate) async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, MeteringError>>,
    ) -> Result<T, MeteringError> {
        bounded(op, self.opts.call_budget_ms(), call).await
    }
}

/// Whether a driver error may go away on its own.
fn is_transient(engine: Engine, e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match engine {
                // Serialization failure, deadlock, lock not available, admin shutdown / crash /
                // cannot connect now, too many connections, and the connection-exception class.
                Engine::Postgres => {
                    matches!(code, "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300")
                        || code.starts_with("08")
                }
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (low byte).
                Engine::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
            }
        }
        _ => false,
    }
}

fn db_error(engine: Engine, opts: &LedgerOptions, op: &'static str, e: sqlx::Error) -> MeteringError {
    match &e {
        sqlx::Error::PoolTimedOut => MeteringError::Timeout { op, timeout_ms: opts.acquire_timeout_ms },
        // query_canceled: the server's statement_timeout fired.
        sqlx::Error::Database(db) if engine == Engine::Postgres && db.code().as_deref() == Some("57014") => {
            MeteringError::Timeout { op, timeout_ms: opts.statement_timeout_ms }
        }
        // SQLITE_BUSY (and its extended codes): busy_timeout ran out waiting for the write lock.
        sqlx::Error::Database(db)
            if engine == Engine::Sqlite
                && db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5) =>
        {
            MeteringError::Timeout { op, timeout_ms: opts.statement_timeout_ms }
        }
        // A stored value that does not decode into its type (see `codec`): the row is corrupt.
        sqlx::Error::ColumnDecode { index, source } => {
            MeteringError::Corrupt { column: index.trim_matches('"').to_owned(), reason: source.to_string() }
        }
        sqlx::Error::Decode(source) => {
            MeteringError::Corrupt { column: "value".to_owned(), reason: source.to_string() }
        }
        _ => MeteringError::Database { op, retryable: is_transient(engine, &e), reason: e.to_string() },
    }
}

async fn bounded<T>(
    op: &'static str,
    timeout_ms: u64,
    call: impl Future<Output = Result<T, MeteringError>>,
) -> Result<T, MeteringError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(MeteringError::Timeout { op, timeout_ms }),
    }
}

/// Creates a missing SQLite ledger file with mode 0600 before SQLite does. SQLite would create
/// it 0644 under the usual umask, and it creates the `-wal` and `-shm` files with the database
/// file's mode: the ledger holds every payer's signed authorizations and spend history, which
/// other users of the host have no business reading. An existing file keeps its mode (the
/// operator chose it). Only when the URL allows creation (`mode=rwc`).
fn create_sqlite_file_private(connect: &SqliteConnectOptions) -> Result<(), MeteringError> {
    let url = sqlx::ConnectOptions::to_url_lossy(connect);
    if !url.query_pairs().any(|(k, v)| k == "mode" && v == "rwc") {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(connect.get_filename()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(MeteringError::Database { op: "create", reason: e.to_string(), retryable: false }),
    }
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`, `sqlite://:memory:`,
/// `mode=memory`), which needs a single, never recycled connection.
fn sqlite_url_is_in_memory(url: &str) -> bool {
    let rest = url.split_once(':').map_or("", |(_, rest)| rest);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_from_url() {
        // Goal: the engine comes from the scheme; anything else is refused without echoing the URL.
        assert_eq!(Engine::from_url("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::from_url("sqlite://data/ledger.db?mode=rwc").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::from_url("postgres://u:secret@host/db").unwrap(), Engine::Postgres);
        assert_eq!(Engine::from_url("postgresql://host/db").unwrap(), Engine::Postgres);
        let err = Engine::from_url("mysql://u:secret@host/db").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn in_memory_detection() {
        // Goal: every spelling of an in-memory SQLite database is recognised, files are not.
        assert!(sqlite_url_is_in_memory("sqlite::memory:"));
        assert!(sqlite_url_is_in_memory("sqlite://:memory:"));
        assert!(sqlite_url_is_in_memory("sqlite://x?mode=memory&cache=shared"));
        assert!(!sqlite_url_is_in_memory("sqlite://data/ledger.db?mode=rwc"));
    }

    #[tokio::test]
    async fn connection_errors_hide_credentials() {
        // Goal: a failed connection reports neither the URL nor its password, in Display or Debug.
        let opts = LedgerOptions { acquire_timeout_ms: 200, statement_timeout_ms: 200, ..LedgerOptions::default() };
        let err = Db::connect("postgres://tollgate:hunter2@127.0.0.1:1/ledger", opts).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2") && !text.contains("127.0.0.1"), "{text}");
        assert!(err.is_retryable(), "{err:?}");
        let err = Db::connect("postgres://tollgate:hunter2@[bad/ledger", opts).await.unwrap_err();
        assert!(
            matches!(err, MeteringError::InvalidUrl { .. }) && !format!("{err} {err:?}").contains("hunter2"),
            "{err:?}"
        );
    }

    #[test]
    fn options_are_checked() {
        // Goal: zero pool size or timeouts are refused before any connection is tried.
        assert!(LedgerOptions::default().validate().is_ok());
        let zero_pool = LedgerOptions { max_connections: 0, ..LedgerOptions::default() };
        assert!(matches!(zero_pool.validate(), Err(MeteringError::InvalidOptions { option: "max_connections", .. })));
        let zero_timeout = LedgerOptions { statement_timeout_ms: 0, ..LedgerOptions::default() };
        assert!(zero_timeout.validate().is_err());
    }
}
