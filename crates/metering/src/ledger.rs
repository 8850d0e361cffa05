//! `Ledger`: the connection pools, the migrations and every query.
//!
//! Owns the choice of engine (SQLite or PostgreSQL, from the URL), the per-engine connection
//! settings (WAL, busy timeout, foreign keys; a server-side statement timeout), the time limit
//! around every call, and the mapping of driver errors to [`MeteringError`].
//!
//! Must not: parse the payment it stores, know HTTP, reach a chain, or put the database URL in
//! an error or in `Debug` output (hosted URLs carry passwords).
//!
//! Both engines run the same SQL text (SQLite accepts PostgreSQL's `$N` placeholders, `RETURNING`
//! and `ON CONFLICT`); [`on_db!`] expands one body per pool type, so there is no `sqlx::Any`.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::MeteringError;
use crate::control::{
    GLOBAL_SCOPE, LOCK_POLICIES_PG, PolicyCheckRow, SELECT_CAP_SPEND, SELECT_POLICY_CHECK, check_cap, evaluate_policies,
};
use crate::reconcile::{NewReconRun, ReconClass, ReconException, ReconItem, ReconNote, ReconRun};
use crate::types::{
    AtomicAmount, DETAIL_BYTES_MAX, Entry, EntryId, EntryState, Event, LABEL_BYTES_MAX, NewEntry, PATH_BYTES_MAX,
    PAYMENT_BYTES_MAX, REASON_BYTES_MAX, SpendQuery, SpendTotals, StateCounts, Tally, Transition, check_cause,
    check_len,
};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The database engine behind a [`Ledger`].
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
    /// Longest the migrations at [`Ledger::connect`] may take (including waiting for another
    /// replica's migration lock on PostgreSQL). On PostgreSQL each statement, the lock wait
    /// included, is also bounded by `statement_timeout_ms`.
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
    fn validate(&self) -> Result<(), MeteringError> {
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

#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs one body against whichever pool the ledger has; the body is type-checked once per
/// engine. `on_db!(&self.db, |pool| ...)` is for reads. Writes name the ledger instead:
/// `on_db!(write self, |pool| ...)` for one statement, `on_db!(write self, |pool, begin| ...)`
/// for a transaction (the body also gets the statement that opens it). On SQLite a write
/// first takes the ledger's in-process write gate (see [`Ledger`]).
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
    (write $ledger:expr, |$pool:ident| $body:expr) => {
        match &$ledger.db {
            Db::Sqlite($pool) => {
                let _gate = $ledger.write_gate.lock().await;
                $body
            }
            Db::Postgres($pool) => $body,
        }
    };
    (write $ledger:expr, |$pool:ident, $begin:ident| $body:expr) => {
        match &$ledger.db {
            Db::Sqlite($pool) => {
                let _gate = $ledger.write_gate.lock().await;
                // IMMEDIATE takes SQLite's write lock up front (waiting up to busy_timeout), so a
                // transaction that reads and then writes cannot fail halfway with BUSY_SNAPSHOT.
                let $begin: &'static str = "BEGIN IMMEDIATE";
                $body
            }
            Db::Postgres($pool) => {
                let $begin: &'static str = "BEGIN";
                $body
            }
        }
    };
}

/// The ledger: a handle on the database pools. Cheap to clone; clones share the pools.
///
/// On SQLite every write takes `write_gate` first: SQLite admits one writer at a time, and a
/// writer that finds the database locked sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...)
/// however soon the lock is free. Queueing the process's writers on a fair async lock instead
/// hands the lock over the moment the previous commit ends. Other processes on the same file
/// (the CLI) still meet the busy handler. PostgreSQL needs no gate (row locks, many replicas).
#[derive(Clone)]
pub struct Ledger {
    pub(crate) db: Db,
    opts: LedgerOptions,
    pub(crate) write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Ledger {
    // By hand: the connect options inside the pools hold the URL's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("engine", &self.engine()).field("options", &self.opts).finish_non_exhaustive()
    }
}

/// The column list of `ledger_entries`, in [`EntryRow`]'s order.
macro_rules! entry_columns {
    () => {
        "id, chain_id, asset, payer, pay_to, nonce, amount, valid_before_unix_s, provider, route, method, path, \
         mode, state, tx_hash, block_number, block_hash, log_index, upstream_status, reason, payment, \
         price_version, credential, credential_version, created_unix_s, updated_unix_s"
    };
}

/// Sums split into high and low 32-bit halves: each partial sum fits a signed 64-bit integer for
/// billions of rows, where SQLite's SUM would fail on overflow and PostgreSQL's returns NUMERIC.
macro_rules! amount_sums {
    () => {
        "CAST(COALESCE(SUM(amount / 4294967296), 0) AS BIGINT) AS hi, \
         CAST(COALESCE(SUM(amount % 4294967296), 0) AS BIGINT) AS lo"
    };
}

// The AFTER INSERT trigger (migration 0006) appends the `reserved` event from `last_cause`.
const INSERT_ENTRY: &str = "INSERT INTO ledger_entries (id, chain_id, asset, payer, pay_to, nonce, amount, \
     valid_before_unix_s, provider, route, method, path, mode, state, payment, price_version, credential, \
     credential_version, created_unix_s, updated_unix_s, last_cause) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'reserved', $14, $16, $17, $18, $15, $15, \
     'reserved')";

const SELECT_STATE: &str = "SELECT state, tx_hash FROM ledger_entries WHERE id = $1";

// One statement per transition: the AFTER UPDATE trigger (migration 0006) appends the event
// from `last_cause` / `last_detail`. The last condition refuses `settling -> settling` with the
// transaction already recorded (a replacement must record a new hash).
const UPDATE_ENTRY: &str = concat!(
    "UPDATE ledger_entries SET state = $1, upstream_status = COALESCE($2, upstream_status), ",
    "tx_hash = COALESCE($3, tx_hash), block_number = COALESCE($4, block_number), ",
    "block_hash = COALESCE($5, block_hash), log_index = COALESCE($6, log_index), reason = COALESCE($7, reason), ",
    "updated_unix_s = $8, last_cause = $11, last_detail = $12 WHERE id = $9 AND state = $10 ",
    "AND NOT ($1 = 'settling' AND state = 'settling' AND tx_hash IS NOT DISTINCT FROM $3) RETURNING ",
    entry_columns!()
);

const SELECT_ENTRY: &str = concat!("SELECT ", entry_columns!(), " FROM ledger_entries WHERE id = $1");

const SELECT_BY_AUTHORIZATION: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 AND nonce = $4"
);

const SELECT_EVENTS: &str = "SELECT id, entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s \
     FROM ledger_events WHERE entry_id = $1 ORDER BY id";

// The state list must match the partial index ledger_entries_unfinished for it to be used.
const SELECT_UNFINISHED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE state IN ('reserved', 'forwarded', 'settling') AND updated_unix_s <= $1 ",
    "ORDER BY updated_unix_s, id LIMIT $2"
);

/// A note on a `settling` entry: an event that keeps the state (see [`Ledger::note_settling`]).
const NOTE_SETTLING: &str = "INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s) \
     SELECT id, 'settling', 'settling', $2, NULL, NULL, $3 FROM ledger_entries WHERE id = $1 AND state = 'settling'";

const SELECT_DEFERRED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE mode = 'deferred' AND state = 'forwarded' ORDER BY valid_before_unix_s, id LIMIT $1"
);

const SELECT_OF_PAYER: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ORDER BY created_unix_s, id LIMIT $4"
);

const SELECT_PENDING_SPEND: &str = concat!(
    "SELECT COUNT(*) AS n, ",
    amount_sums!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ",
    "AND state IN ('reserved', 'forwarded', 'settling')"
);

const SELECT_SPEND: &str = concat!(
    "SELECT state, COUNT(*) AS n, ",
    amount_sums!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ",
    "AND ($4 IS NULL OR provider = $4) AND ($5 IS NULL OR route = $5) ",
    "AND ($6 IS NULL OR created_unix_s >= $6) AND ($7 IS NULL OR created_unix_s < $7) ",
    "AND state IN ('reserved', 'forwarded', 'settling', 'settled', 'refund_owed') GROUP BY state"
);

const UPSERT_LEASE: &str = "INSERT INTO leases (name, holder, expires_unix_s) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_unix_s = excluded.expires_unix_s \
     WHERE leases.holder = excluded.holder OR leases.expires_unix_s <= $4";

const DELETE_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

/// A `ledger_entries` row as the drivers decode it; checked into an [`Entry`].
#[derive(sqlx::FromRow)]
struct EntryRow {
    id: String,
    chain_id: i64,
    asset: String,
    payer: String,
    pay_to: String,
    nonce: String,
    amount: i64,
    valid_before_unix_s: i64,
    provider: String,
    route: String,
    method: String,
    path: String,
    mode: String,
    state: String,
    tx_hash: Option<String>,
    block_number: Option<i64>,
    block_hash: Option<String>,
    log_index: Option<i64>,
    upstream_status: Option<i64>,
    reason: Option<String>,
    payment: String,
    price_version: Option<i64>,
    credential: Option<String>,
    credential_version: Option<i64>,
    created_unix_s: i64,
    updated_unix_s: i64,
}

/// A `ledger_events` row as the drivers decode it.
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    entry_id: String,
    from_state: Option<String>,
    to_state: String,
    cause: String,
    detail: Option<String>,
    tx_hash: Option<String>,
    at_unix_s: i64,
}

/// One `SELECT [state,] COUNT(*), hi, lo` row of a spend query.
#[derive(sqlx::FromRow)]
struct SumRow {
    n: i64,
    hi: i64,
    lo: i64,
}

fn parse_column<T>(column: &'static str, value: &str) -> Result<T, MeteringError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| MeteringError::corrupt(column, e))
}

pub(crate) fn unsigned_column(column: &'static str, value: i64) -> Result<u64, MeteringError> {
    u64::try_from(value)
        .map_err(|_| MeteringError::Corrupt { column: column.to_owned(), reason: format!("negative value {value}") })
}

pub(crate) fn to_i64(field: &'static str, value: u64) -> Result<i64, MeteringError> {
    i64::try_from(value).map_err(|_| MeteringError::OutOfRange { field, value: value.into() })
}

/// Addresses and hashes are stored as lowercase `0x`-hex: one spelling per value, so the
/// UNIQUE constraint compares like with like.
pub(crate) fn hex_address(address: Address) -> String {
    format!("{address:#x}")
}

fn hex_b256(hash: B256) -> String {
    format!("{hash:#x}")
}

impl EntryRow {
    fn into_entry(self) -> Result<Entry, MeteringError> {
        Ok(Entry {
            id: parse_column("id", &self.id)?,
            chain_id: unsigned_column("chain_id", self.chain_id)?,
            asset: parse_column("asset", &self.asset)?,
            payer: parse_column("payer", &self.payer)?,
            pay_to: parse_column("pay_to", &self.pay_to)?,
            nonce: parse_column("nonce", &self.nonce)?,
            amount: AtomicAmount::new(unsigned_column("amount", self.amount)?)
                .ok_or_else(|| MeteringError::Corrupt { column: "amount".to_owned(), reason: "zero".to_owned() })?,
            valid_before_unix_s: unsigned_column("valid_before_unix_s", self.valid_before_unix_s)?,
            provider: self.provider,
            route: self.route,
            method: self.method,
            path: self.path,
            mode: parse_column("mode", &self.mode)?,
            state: parse_column("state", &self.state)?,
            tx_hash: self.tx_hash.as_deref().map(|v| parse_column("tx_hash", v)).transpose()?,
            block_number: self.block_number.map(|v| unsigned_column("block_number", v)).transpose()?,
            block_hash: self.block_hash.as_deref().map(|v| parse_column("block_hash", v)).transpose()?,
            log_index: self.log_index.map(|v| unsigned_column("log_index", v)).transpose()?,
            upstream_status: self
                .upstream_status
                .map(|v| {
                    u16::try_from(v).map_err(|_| MeteringError::Corrupt {
                        column: "upstream_status".to_owned(),
                        reason: format!("{v} is not an HTTP status"),
                    })
                })
                .transpose()?,
            reason: self.reason,
            payment: self.payment,
            price_version: self.price_version.map(|v| unsigned_column("price_version", v)).transpose()?,
            credential: self.credential,
            credential_version: self
                .credential_version
                .map(|v| unsigned_column("credential_version", v))
                .transpose()?,
            created_unix_s: unsigned_column("created_unix_s", self.created_unix_s)?,
            updated_unix_s: unsigned_column("updated_unix_s", self.updated_unix_s)?,
        })
    }
}

impl EventRow {
    fn into_event(self) -> Result<Event, MeteringError> {
        Ok(Event {
            id: self.id,
            entry_id: parse_column("entry_id", &self.entry_id)?,
            from_state: self.from_state.as_deref().map(|v| parse_column("from_state", v)).transpose()?,
            to_state: parse_column("to_state", &self.to_state)?,
            cause: self.cause,
            detail: self.detail,
            tx_hash: self.tx_hash.as_deref().map(|v| parse_column("tx_hash", v)).transpose()?,
            at_unix_s: unsigned_column("at_unix_s", self.at_unix_s)?,
        })
    }
}

impl SumRow {
    fn into_tally(self) -> Result<Tally, MeteringError> {
        let count = unsigned_column("count", self.n)?;
        let hi = unsigned_column("amount sum", self.hi)?;
        let lo = unsigned_column("amount sum", self.lo)?;
        Ok(Tally { count, amount: (u128::from(hi) << 32) + u128::from(lo) })
    }
}

/// The columns a transition writes, in stored form.
struct TransitionColumns {
    upstream_status: Option<i64>,
    tx_hash: Option<String>,
    block_number: Option<i64>,
    block_hash: Option<String>,
    log_index: Option<i64>,
    reason: Option<String>,
}

impl TransitionColumns {
    /// The columns of `t`, after checking the cause and detail that go with it.
    fn checked(t: &Transition, cause: &str, detail: Option<&str>) -> Result<TransitionColumns, MeteringError> {
        check_cause(cause)?;
        if let Some(detail) = detail {
            check_len("detail", detail, DETAIL_BYTES_MAX)?;
        }
        Self::of(t)
    }

    fn of(t: &Transition) -> Result<TransitionColumns, MeteringError> {
        let mut columns = TransitionColumns {
            upstream_status: None,
            tx_hash: t.tx_hash().map(hex_b256),
            block_number: None,
            block_hash: None,
            log_index: None,
            reason: None,
        };
        match t {
            Transition::Forwarded { upstream_status } => {
                if let Some(status) = upstream_status {
                    if !(100..=999).contains(status) {
                        return Err(MeteringError::InvalidValue {
                            what: "upstream_status",
                            reason: format!("{status} is not an HTTP status code"),
                        });
                    }
                    columns.upstream_status = Some(i64::from(*status));
                }
            }
            Transition::Settling { .. } => {}
            Transition::Settled { block_number, block_hash, log_index, .. } => {
                columns.block_number = Some(to_i64("block_number", *block_number)?);
                columns.block_hash = Some(hex_b256(*block_hash));
                columns.log_index = Some(to_i64("log_index", *log_index)?);
            }
            Transition::SettleFailed { reason } | Transition::Voided { reason } | Transition::RefundOwed { reason } => {
                check_len("reason", reason, REASON_BYTES_MAX)?;
                columns.reason = Some(reason.clone());
            }
        }
        Ok(columns)
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

impl Ledger {
    /// Connects to the database the URL names and applies the migrations (idempotent: a second
    /// connect to a migrated database changes nothing).
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL` by default (a reservation must survive
    /// a power cut: it is the record that money may move; see
    /// [`LedgerOptions::sqlite_synchronous_full`]), foreign keys on and `busy_timeout` set to
    /// `statement_timeout_ms`. An in-memory SQLite database lives in one connection, never
    /// recycled. PostgreSQL connections get `statement_timeout` at startup.
    pub async fn connect(url: &str, opts: LedgerOptions) -> Result<Ledger, MeteringError> {
        opts.validate()?;
        let engine = Engine::from_url(url)?;
        let invalid_url = |e: sqlx::Error| MeteringError::InvalidUrl { reason: e.to_string() };
        let db = match engine {
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
                    connect = connect.journal_mode(SqliteJournalMode::Wal);
                    pool = pool.max_connections(opts.max_connections);
                }
                let pool = bounded("connect", opts.call_budget_ms(), async {
                    pool.connect_with(connect).await.map_err(|e| db_error(engine, &opts, "connect", e))
                })
                .await?;
                Db::Sqlite(pool)
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
                Db::Postgres(pool)
            }
        };
        let ledger = Ledger { db, opts, write_gate: std::sync::Arc::default() };
        ledger.migrate().await?;
        Ok(ledger)
    }

    async fn migrate(&self) -> Result<(), MeteringError> {
        let migration = |e: sqlx::migrate::MigrateError| MeteringError::Migration { reason: e.to_string() };
        bounded("migrate", self.opts.migrate_timeout_ms, async {
            match &self.db {
                Db::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await.map_err(migration),
                // Takes an advisory lock, so replicas starting together migrate one at a time.
                Db::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await.map_err(migration),
            }
        })
        .await
    }

    /// Readiness: the database answers and its schema is the one this build migrates to
    /// (the newest embedded migration is applied). Returns the applied schema version.
    pub async fn schema_check(&self) -> Result<i64, MeteringError> {
        const OP: &str = "schema_check";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let applied: Option<i64> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                        .fetch_one(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        let expected = match self.db {
            Db::Sqlite(_) => SQLITE_MIGRATOR.iter().map(|m| m.version).max(),
            Db::Postgres(_) => POSTGRES_MIGRATOR.iter().map(|m| m.version).max(),
        };
        match (applied, expected) {
            (Some(a), Some(e)) if a >= e => Ok(a),
            (a, e) => Err(MeteringError::Migration {
                reason: format!("schema at version {} but this build needs {}", a.unwrap_or(0), e.unwrap_or(0)),
            }),
        }
    }

    /// Entries per state, and the creation time of the oldest deferred entry not yet settled
    /// (`forwarded` or `settling`), for the metrics exporter. One scan of the entries table:
    /// call it every few seconds at most.
    pub async fn state_counts(&self) -> Result<StateCounts, MeteringError> {
        const OP: &str = "state_counts";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(String, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as("SELECT state, COUNT(*) FROM ledger_entries GROUP BY state")
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        let oldest: Option<i64> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_scalar(
                        "SELECT MIN(created_unix_s) FROM ledger_entries \
                         WHERE mode = 'deferred' AND state IN ('forwarded', 'settling')",
                    )
                    .fetch_one(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        let mut counts = StateCounts::default();
        for (state, n) in rows {
            if let Ok(state) = state.parse::<EntryState>() {
                counts.by_state.push((state, u64::try_from(n).unwrap_or(0)));
            }
        }
        counts.oldest_unsettled_deferred_unix_s = oldest.and_then(|t| u64::try_from(t).ok());
        Ok(counts)
    }

    /// The engine behind this ledger.
    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Closes the pools: waits for calls in progress, then closes every connection. Calls after
    /// this fail.
    pub async fn close(&self) {
        on_db!(&self.db, |pool| pool.close().await)
    }

    pub(crate) fn db_error(&self, op: &'static str, e: sqlx::Error) -> MeteringError {
        db_error(self.engine(), &self.opts, op, e)
    }

    pub(crate) async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, MeteringError>>,
    ) -> Result<T, MeteringError> {
        bounded(op, self.opts.call_budget_ms(), call).await
    }

    /// Inserts the entry in state `reserved` plus its first event (cause `reserved`), in one
    /// transaction, and returns its new id.
    ///
    /// A second reservation of the same (chain, asset, payer, nonce) fails with
    /// [`MeteringError::DuplicateAuthorization`] naming the existing entry and its state. The
    /// duplicate is detected by the UNIQUE constraint at insert time (never by a prior SELECT),
    /// so the guard holds across processes sharing the database.
    pub async fn reserve(&self, e: &NewEntry) -> Result<EntryId, MeteringError> {
        const OP: &str = "reserve";
        check_len("provider", &e.provider, LABEL_BYTES_MAX)?;
        check_len("route", &e.route, LABEL_BYTES_MAX)?;
        check_len("method", &e.method, LABEL_BYTES_MAX)?;
        check_len("path", &e.path, PATH_BYTES_MAX)?;
        check_len("payment", &e.payment, PAYMENT_BYTES_MAX)?;
        let chain_id = to_i64("chain_id", e.chain_id)?;
        let valid_before = to_i64("valid_before_unix_s", e.valid_before_unix_s)?;
        let now = to_i64("now_unix_s", e.now_unix_s)?;
        let (asset, payer, nonce) = (hex_address(e.asset), hex_address(e.payer), hex_b256(e.nonce));
        let price_version = e.price_version.map(|v| to_i64("price_version", v)).transpose()?;
        let credential_version = e.credential_version.map(|v| to_i64("credential_version", v)).transpose()?;
        if let Some(c) = &e.credential {
            check_len("credential", c, LABEL_BYTES_MAX)?;
        }
        let id = EntryId::random()?;
        let err = |e: sqlx::Error| self.db_error(OP, e);

        let inserted = self
            .bounded(OP, async {
                on_db!(write self, |pool, begin| {
                    let insert = || {
                        sqlx::query(INSERT_ENTRY)
                            .bind(id.as_str())
                            .bind(chain_id)
                            .bind(&asset)
                            .bind(&payer)
                            .bind(hex_address(e.pay_to))
                            .bind(&nonce)
                            .bind(e.amount.to_i64())
                            .bind(valid_before)
                            .bind(&e.provider)
                            .bind(&e.route)
                            .bind(&e.method)
                            .bind(&e.path)
                            .bind(e.mode.as_str())
                            .bind(&e.payment)
                            .bind(now)
                            .bind(price_version)
                            .bind(e.credential.as_deref())
                            .bind(credential_version)
                    };
                    // A duplicate is detected by the UNIQUE key at insert time: `Ok(false)`.
                    let outcome = |r: Result<_, sqlx::Error>| match r {
                        Ok(_) => Ok(true),
                        Err(sqlx::Error::Database(ref db)) if db.is_unique_violation() => Ok(false),
                        Err(x) => Err(err(x)),
                    };
                    // The payer's policies (revocation, allowlist, scope, per-call maximum) are
                    // read first. Without caps the reservation is then one statement (entry and
                    // event, by trigger). A policy committed between the read and the insert
                    // applies from the next call.
                    let rows: Vec<PolicyCheckRow> = sqlx::query_as(SELECT_POLICY_CHECK)
                        .bind(&payer)
                        .bind(&e.provider)
                        .fetch_all(pool)
                        .await
                        .map_err(err)?;
                    if !rows.iter().any(|r| r.daily_cap.is_some() || r.monthly_cap.is_some()) {
                        evaluate_policies(&rows, &e.route, e.amount.get(), e.now_unix_s)
                            .map_err(MeteringError::PolicyDenied)?;
                        return outcome(insert().execute(pool).await);
                    }
                    // Caps: checked and reserved in one transaction so that concurrent calls and
                    // replicas cannot overspend. SQLite holds its write lock (BEGIN IMMEDIATE);
                    // PostgreSQL locks the payer's policy rows before the spend is summed.
                    let mut tx = pool.begin_with(begin).await.map_err(err)?;
                    if matches!(self.engine(), Engine::Postgres) {
                        sqlx::query(LOCK_POLICIES_PG)
                            .bind(&payer)
                            .bind(&e.provider)
                            .execute(&mut *tx)
                            .await
                            .map_err(err)?;
                    }
                    let rows: Vec<PolicyCheckRow> = sqlx::query_as(SELECT_POLICY_CHECK)
                        .bind(&payer)
                        .bind(&e.provider)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(err)?;
                    let caps = evaluate_policies(&rows, &e.route, e.amount.get(), e.now_unix_s)
                        .map_err(MeteringError::PolicyDenied)?;
                    for cap in &caps {
                        let scope = (cap.scope != GLOBAL_SCOPE).then_some(cap.scope.as_str());
                        let spent: SumRow = sqlx::query_as(SELECT_CAP_SPEND)
                            .bind(&payer)
                            .bind(to_i64("since_unix_s", cap.since_unix_s)?)
                            .bind(scope)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err)?;
                        check_cap(cap, spent.into_tally()?.amount, e.amount.get())
                            .map_err(MeteringError::PolicyDenied)?;
                    }
                    let inserted = outcome(insert().execute(&mut *tx).await)?;
                    if inserted {
                        tx.commit().await.map_err(err)?;
                    } else {
                        // The transaction is dead on PostgreSQL; nothing was written. A failed
                        // rollback only means the connection is dropped, which sqlx handles.
                        let _ = tx.rollback().await;
                    }
                    Ok(inserted)
                })
            })
            .await?;
        if inserted {
            return Ok(id);
        }
        // The conflicting row is committed (the insert waited for it), so this read sees it.
        match self.entry_by_authorization(e.chain_id, e.asset, e.payer, e.nonce).await? {
            Some(existing) => {
                Err(MeteringError::DuplicateAuthorization { existing: existing.id, state: existing.state })
            }
            None => Err(MeteringError::Database {
                op: OP,
                reason: "unique violation on a fresh entry id (random id collision)".to_owned(),
                retryable: true,
            }),
        }
    }

    /// Applies a transition and (by trigger) appends its event (`cause`, `detail` JSON, and the
    /// transaction hash the transition records), and returns the updated entry.
    ///
    /// The UPDATE is conditional on the state read just before (`WHERE id = ? AND state = ?`),
    /// so of two processes racing on one entry only one wins; the other gets
    /// [`MeteringError::StaleState`]. A transition the current state does not allow is
    /// [`MeteringError::IllegalTransition`]; `settling -> settling` with the hash already
    /// recorded is [`MeteringError::NotAReplacement`]; an unknown id is
    /// [`MeteringError::NotFound`]. `cause` is 1 to 64 characters of `[a-z0-9_]`.
    pub async fn transition(
        &self,
        id: &EntryId,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<Entry, MeteringError> {
        let columns = TransitionColumns::checked(&t, cause, detail)?;
        let (from, current_tx_hash) = self.current_state(id).await?;
        let to = t.to_state();
        if !from.can_go_to(to) {
            return Err(MeteringError::IllegalTransition { id: id.clone(), from, to });
        }
        if let (EntryState::Settling, Transition::Settling { tx_hash }) = (from, &t)
            && current_tx_hash == columns.tx_hash
        {
            return Err(MeteringError::NotAReplacement { id: id.clone(), tx_hash: *tx_hash });
        }
        match self.update_if(id, from, to, &columns, cause, detail, now_unix_s).await? {
            Some(row) => row.into_entry(),
            // Another writer moved the entry after our read. Report what it is now.
            None => {
                let (found, _) = self.current_state(id).await?;
                Err(MeteringError::StaleState { id: id.clone(), expected: from, found })
            }
        }
    }

    /// Applies `t` only if the entry is in state `expected`: `Ok(true)` when applied,
    /// `Ok(false)` when the entry is in another state (including a racer having moved it
    /// first, or the same transaction hash already recorded). This is the claim primitive:
    /// of several workers calling it with the same `expected`, exactly one gets `true`. One
    /// conditional statement: the state change and (by trigger) its event.
    pub async fn transition_from(
        &self,
        id: &EntryId,
        expected: EntryState,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let columns = TransitionColumns::checked(&t, cause, detail)?;
        let to = t.to_state();
        if !expected.can_go_to(to) {
            // Illegal from `expected`: an error if the entry is there, a lost race otherwise.
            let (from, _) = self.current_state(id).await?;
            return if from == expected {
                Err(MeteringError::IllegalTransition { id: id.clone(), from, to })
            } else {
                Ok(false)
            };
        }
        if self.update_if(id, expected, to, &columns, cause, detail, now_unix_s).await?.is_some() {
            return Ok(true);
        }
        // Not applied: another state (a racer won) or the same transaction already recorded;
        // `NotFound` if there is no such entry.
        self.current_state(id).await.map(|_| false)
    }

    /// The entry's state and transaction hash, or `NotFound`.
    async fn current_state(&self, id: &EntryId) -> Result<(EntryState, Option<String>), MeteringError> {
        const OP: &str = "transition";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let found: Option<(String, Option<String>)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_STATE).bind(id.as_str()).fetch_optional(pool).await.map_err(err)
                })
            })
            .await?;
        let (state, tx_hash) = found.ok_or_else(|| MeteringError::NotFound { id: id.clone() })?;
        Ok((parse_column("state", &state)?, tx_hash))
    }

    /// The one conditional UPDATE of a transition (`UPDATE_ENTRY`): the updated row, or `None`
    /// when the entry is not in `from` (or the replacement hash is already recorded).
    #[allow(clippy::too_many_arguments)]
    async fn update_if(
        &self,
        id: &EntryId,
        from: EntryState,
        to: EntryState,
        columns: &TransitionColumns,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<Option<EntryRow>, MeteringError> {
        const OP: &str = "transition";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool| {
                sqlx::query_as(UPDATE_ENTRY)
                    .bind(to.as_str())
                    .bind(columns.upstream_status)
                    .bind(columns.tx_hash.as_deref())
                    .bind(columns.block_number)
                    .bind(columns.block_hash.as_deref())
                    .bind(columns.log_index)
                    .bind(columns.reason.as_deref())
                    .bind(now)
                    .bind(id.as_str())
                    .bind(from.as_str())
                    .bind(cause)
                    .bind(detail)
                    .fetch_optional(pool)
                    .await
                    .map_err(err)
            })
        })
        .await
    }

    /// Appends a note to a `settling` entry's history without changing its state (an event
    /// `settling → settling` with no transaction): that the agent was answered while the
    /// settlement was still pending, so the response was delivered. The recovery sweep reads
    /// it to tell a delivered `after` call from one whose process died before answering.
    /// `Ok(false)` when the entry is not `settling`.
    pub async fn note_settling(&self, id: &EntryId, cause: &str, now_unix_s: u64) -> Result<bool, MeteringError> {
        const OP: &str = "note_settling";
        check_len("cause", cause, LABEL_BYTES_MAX)?;
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let done = self
            .bounded(OP, async {
                on_db!(write self, |pool| {
                    sqlx::query(NOTE_SETTLING)
                        .bind(id.as_str())
                        .bind(cause)
                        .bind(now)
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected())
                        .map_err(err)
                })
            })
            .await?;
        Ok(done == 1)
    }

    /// A settled entry whose recorded block is no longer the chain's (a reorg) goes back to
    /// `settling` with its block, block hash and log index cleared, keeping its transaction,
    /// so that the receipt is checked again (where the transaction landed now, if anywhere).
    /// Conditional on the entry still being `settled` in `recorded_block_hash`: `false` when
    /// it moved meanwhile. The event (cause `reorged`) keeps the old block in its detail.
    pub async fn reopen_reorged(
        &self,
        id: &EntryId,
        recorded_block_hash: B256,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        const OP: &str = "reopen_reorged";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let recorded = hex_b256(recorded_block_hash);
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool| {
                let detail = format!("{{\"reorged_block_hash\":\"{recorded}\"}}");
                let done = sqlx::query(
                    "UPDATE ledger_entries SET state = 'settling', block_number = NULL, block_hash = NULL, \
                     log_index = NULL, updated_unix_s = $1, last_cause = 'reorged', last_detail = $4 \
                     WHERE id = $2 AND state = 'settled' AND block_hash = $3",
                )
                .bind(now)
                .bind(id.as_str())
                .bind(&recorded)
                .bind(&detail)
                .execute(pool)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                Ok(done)
            })
        })
        .await
    }

    /// The entry with this id.
    pub async fn entry(&self, id: &EntryId) -> Result<Option<Entry>, MeteringError> {
        const OP: &str = "entry";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let row: Option<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_ENTRY).bind(id.as_str()).fetch_optional(pool).await.map_err(err)
                })
            })
            .await?;
        row.map(EntryRow::into_entry).transpose()
    }

    /// The entry that reserved this authorization, if any.
    pub async fn entry_by_authorization(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        nonce: B256,
    ) -> Result<Option<Entry>, MeteringError> {
        const OP: &str = "entry_by_authorization";
        let chain_id = to_i64("chain_id", chain_id)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let row: Option<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_BY_AUTHORIZATION)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .bind(hex_address(payer))
                        .bind(hex_b256(nonce))
                        .fetch_optional(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        row.map(EntryRow::into_entry).transpose()
    }

    /// The entry's events, oldest first (the reservation is the first).
    pub async fn events(&self, id: &EntryId) -> Result<Vec<Event>, MeteringError> {
        const OP: &str = "events";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EventRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_EVENTS).bind(id.as_str()).fetch_all(pool).await.map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// Entries in `reserved`, `forwarded` or `settling` last updated at or before
    /// `updated_before_unix_s`, oldest update first, at most `limit` (recovery's work list).
    pub async fn unfinished(&self, updated_before_unix_s: u64, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "unfinished";
        let before = to_i64("updated_before_unix_s", updated_before_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_UNFINISHED)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// Entries of mode `deferred` in state `forwarded`, earliest `validBefore` first, at most
    /// `limit`: the durable truth of the settlement queue.
    pub async fn deferred_backlog(&self, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "deferred_backlog";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_DEFERRED).bind(i64::from(limit)).fetch_all(pool).await.map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// A payer's entries on (chain, asset), oldest first, at most `limit`.
    pub async fn entries_of_payer(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "entries_of_payer";
        let chain_id = to_i64("chain_id", chain_id)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_OF_PAYER)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .bind(hex_address(payer))
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// Entries reserved in `[from, to)`, optionally of one provider and/or payer, in
    /// reservation order, `limit` at most after skipping `offset` (read-only views for finance).
    pub async fn entries_page(
        &self,
        provider: Option<&str>,
        payer: Option<Address>,
        from_unix_s: u64,
        to_unix_s: u64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "entries_page";
        const SQL: &str = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger_entries WHERE ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR payer = $2) ",
            "AND created_unix_s >= $3 AND created_unix_s < $4 ORDER BY created_unix_s, id LIMIT $5 OFFSET $6"
        );
        let (from, to) = (to_i64("from_unix_s", from_unix_s)?, to_i64("to_unix_s", to_unix_s)?);
        let offset = to_i64("offset", offset)?;
        let payer = payer.map(hex_address);
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SQL)
                        .bind(provider)
                        .bind(payer.as_deref())
                        .bind(from)
                        .bind(to)
                        .bind(i64::from(limit.clamp(1, 1000)))
                        .bind(offset)
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// Entries that ended (settled, voided, failed, refund owed) in `[since, before)` and have no
    /// audit record: their record was still queued when the process that served them died.
    /// Only entries reserved since the first audit record count (older ones predate the audit
    /// trail). Oldest first, at most `limit`.
    pub async fn entries_without_audit(
        &self,
        since_unix_s: u64,
        before_unix_s: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "entries_without_audit";
        const SQL: &str = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger_entries e WHERE e.updated_unix_s >= $1 AND e.updated_unix_s < $2 ",
            "AND e.state IN ('settled', 'voided', 'settle_failed', 'refund_owed') ",
            "AND e.created_unix_s * 1000 >= (SELECT COALESCE(MIN(at_unix_ms), 9223372036854775807) FROM audit_log) ",
            "AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.entry_id = e.id) ORDER BY e.updated_unix_s, e.id LIMIT $3"
        );
        let (since, before) = (to_i64("since_unix_s", since_unix_s)?, to_i64("before_unix_s", before_unix_s)?);
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SQL)
                        .bind(since)
                        .bind(before)
                        .bind(i64::from(limit.clamp(1, 10_000)))
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// Sum of the amounts of this payer's entries on (chain, asset) in `reserved`, `forwarded`
    /// or `settling`: money that may still move.
    pub async fn pending_spend(&self, chain_id: u64, asset: Address, payer: Address) -> Result<u128, MeteringError> {
        const OP: &str = "pending_spend";
        let chain_id = to_i64("chain_id", chain_id)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let row: SumRow = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_PENDING_SPEND)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .bind(hex_address(payer))
                        .fetch_one(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        Ok(row.into_tally()?.amount)
    }

    /// A payer's spend on (chain, asset): counts and amounts of settled, pending (reserved,
    /// forwarded, settling) and refund-owed entries, optionally only of one provider, one route
    /// and entries created in `[created_from_unix_s, created_before_unix_s)`.
    pub async fn spend(&self, q: &SpendQuery) -> Result<SpendTotals, MeteringError> {
        const OP: &str = "spend";
        let chain_id = to_i64("chain_id", q.chain_id)?;
        let from = q.created_from_unix_s.map(|v| to_i64("created_from_unix_s", v)).transpose()?;
        let before = q.created_before_unix_s.map(|v| to_i64("created_before_unix_s", v)).transpose()?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(String, i64, i64, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_SPEND)
                        .bind(chain_id)
                        .bind(hex_address(q.asset))
                        .bind(hex_address(q.payer))
                        .bind(q.provider.as_deref())
                        .bind(q.route.as_deref())
                        .bind(from)
                        .bind(before)
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        let mut totals = SpendTotals::default();
        for (state, n, hi, lo) in rows {
            let tally = SumRow { n, hi, lo }.into_tally()?;
            let bucket = match parse_column::<EntryState>("state", &state)? {
                EntryState::Settled => &mut totals.settled,
                EntryState::RefundOwed => &mut totals.refund_owed,
                EntryState::Reserved | EntryState::Forwarded | EntryState::Settling => &mut totals.pending,
                EntryState::SettleFailed | EntryState::Voided => continue,
            };
            bucket.count += tally.count;
            bucket.amount += tally.amount;
        }
        Ok(totals)
    }

    /// Takes or renews the lease `name` for `holder` until `now_unix_s + ttl_s`. Succeeds
    /// (`true`) if the lease is free, expired, or already held by `holder`; `false` if another
    /// holder has it. Atomic on both engines (one upsert), so two processes cannot both win.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_s: u64,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        const OP: &str = "try_lease";
        check_lease_names(name, holder)?;
        if ttl_s == 0 {
            return Err(MeteringError::InvalidValue { what: "lease ttl", reason: "must be at least 1 s".to_owned() });
        }
        let now = to_i64("now_unix_s", now_unix_s)?;
        let expires = to_i64("lease expiry", now_unix_s.saturating_add(ttl_s))?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let affected = self
            .bounded(OP, async {
                on_db!(write self, |pool| {
                    sqlx::query(UPSERT_LEASE)
                        .bind(name)
                        .bind(holder)
                        .bind(expires)
                        .bind(now)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected())
                        .map_err(err)
                })
            })
            .await?;
        Ok(affected == 1)
    }

    /// Releases the lease if `holder` has it; otherwise does nothing.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MeteringError> {
        const OP: &str = "release_lease";
        check_lease_names(name, holder)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool| {
                sqlx::query(DELETE_LEASE).bind(name).bind(holder).execute(pool).await.map(drop).map_err(err)
            })
        })
        .await
    }
}

const SELECT_SETTLED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND pay_to = $3 AND (state = 'settling' ",
    "OR (state IN ('settled', 'refund_owed') AND ($4 IS NULL OR block_number >= $4) ",
    "AND ($5 IS NULL OR block_number <= $5))) ",
    // COALESCE: the engines sort NULLs differently, and the order must be the same on both.
    "ORDER BY COALESCE(block_number, -1), COALESCE(log_index, -1), id LIMIT $6"
);

const INSERT_RUN: &str = "INSERT INTO recon_runs (chain_id, asset, from_block, to_block, cursor_block, \
     started_unix_s, finished_unix_s, n_matched, n_ledger_settled_missing_onchain, n_onchain_missing_in_ledger, \
     n_amount_mismatch, n_payee_mismatch, n_unconfirmed, n_reorged, chain_total, ledger_total, matched_total, \
     tie_out_holds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     RETURNING id";

const RUN_COLUMNS: &str = "id, chain_id, asset, from_block, to_block, cursor_block, started_unix_s, \
     finished_unix_s, n_matched, n_ledger_settled_missing_onchain, n_onchain_missing_in_ledger, n_amount_mismatch, \
     n_payee_mismatch, n_unconfirmed, n_reorged, chain_total, ledger_total, matched_total, tie_out_holds";

const SELECT_CURSOR: &str = "SELECT MAX(cursor_block) FROM recon_runs WHERE chain_id = $1 AND asset = $2";

const INSERT_EXCEPTION: &str = "INSERT INTO recon_exceptions (run_id, class, payer, pay_to, chain_to, nonce, \
     tx_hash, block_number, log_index, entry_id, amount_ledger, amount_chain) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SELECT_EXCEPTIONS: &str = "SELECT id, run_id, class, payer, pay_to, chain_to, nonce, tx_hash, block_number, \
     log_index, entry_id, amount_ledger, amount_chain FROM recon_exceptions WHERE run_id = $1 ORDER BY id";

const INSERT_NOTE: &str =
    "INSERT INTO recon_notes (exception_id, who, why, at_unix_s) VALUES ($1, $2, $3, $4) RETURNING id";

const SELECT_NOTES: &str =
    "SELECT id, exception_id, who, why, at_unix_s FROM recon_notes WHERE exception_id = $1 ORDER BY id";

/// A `recon_runs` row as the drivers decode it.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    chain_id: i64,
    asset: String,
    from_block: i64,
    to_block: i64,
    cursor_block: Option<i64>,
    started_unix_s: i64,
    finished_unix_s: i64,
    n_matched: i64,
    n_ledger_settled_missing_onchain: i64,
    n_onchain_missing_in_ledger: i64,
    n_amount_mismatch: i64,
    n_payee_mismatch: i64,
    n_unconfirmed: i64,
    n_reorged: i64,
    chain_total: String,
    ledger_total: String,
    matched_total: String,
    tie_out_holds: i64,
}

/// A `recon_exceptions` row as the drivers decode it.
#[derive(sqlx::FromRow)]
struct ExceptionRow {
    id: i64,
    run_id: i64,
    class: String,
    payer: String,
    pay_to: String,
    chain_to: Option<String>,
    nonce: Option<String>,
    tx_hash: Option<String>,
    block_number: Option<i64>,
    log_index: Option<i64>,
    entry_id: Option<String>,
    amount_ledger: Option<String>,
    amount_chain: Option<String>,
}

fn decimal_column(column: &'static str, value: &str) -> Result<U256, MeteringError> {
    U256::from_str_radix(value, 10)
        .map_err(|e| MeteringError::Corrupt { column: column.to_owned(), reason: e.to_string() })
}

impl RunRow {
    fn into_run(self) -> Result<ReconRun, MeteringError> {
        let counts = [
            self.n_matched,
            self.n_ledger_settled_missing_onchain,
            self.n_onchain_missing_in_ledger,
            self.n_amount_mismatch,
            self.n_payee_mismatch,
            self.n_unconfirmed,
            self.n_reorged,
        ];
        Ok(ReconRun {
            id: self.id,
            chain_id: unsigned_column("chain_id", self.chain_id)?,
            asset: parse_column("asset", &self.asset)?,
            from_block: unsigned_column("from_block", self.from_block)?,
            to_block: unsigned_column("to_block", self.to_block)?,
            cursor_block: self.cursor_block.map(|v| unsigned_column("cursor_block", v)).transpose()?,
            started_unix_s: unsigned_column("started_unix_s", self.started_unix_s)?,
            finished_unix_s: unsigned_column("finished_unix_s", self.finished_unix_s)?,
            counts: ReconClass::ALL
                .into_iter()
                .zip(counts)
                .map(|(class, n)| Ok((class, unsigned_column("count", n)?)))
                .collect::<Result<_, MeteringError>>()?,
            chain_total: decimal_column("chain_total", &self.chain_total)?,
            ledger_total: decimal_column("ledger_total", &self.ledger_total)?,
            matched_total: decimal_column("matched_total", &self.matched_total)?,
            tie_out_holds: self.tie_out_holds == 1,
        })
    }
}

impl ExceptionRow {
    fn into_exception(self) -> Result<ReconException, MeteringError> {
        Ok(ReconException {
            id: self.id,
            run_id: self.run_id,
            class: parse_column("class", &self.class)?,
            payer: parse_column("payer", &self.payer)?,
            pay_to: parse_column("pay_to", &self.pay_to)?,
            chain_to: self.chain_to.as_deref().map(|v| parse_column("chain_to", v)).transpose()?,
            nonce: self.nonce.as_deref().map(|v| parse_column("nonce", v)).transpose()?,
            tx_hash: self.tx_hash.as_deref().map(|v| parse_column("tx_hash", v)).transpose()?,
            block_number: self.block_number.map(|v| unsigned_column("block_number", v)).transpose()?,
            log_index: self.log_index.map(|v| unsigned_column("log_index", v)).transpose()?,
            entry_id: self.entry_id.as_deref().map(|v| parse_column("entry_id", v)).transpose()?,
            amount_ledger: self.amount_ledger.as_deref().map(|v| parse_column("amount_ledger", v)).transpose()?,
            amount_chain: self.amount_chain.as_deref().map(|v| decimal_column("amount_chain", v)).transpose()?,
        })
    }
}

/// The stored form of one exception's columns.
struct ExceptionColumns {
    class: &'static str,
    payer: String,
    pay_to: String,
    chain_to: Option<String>,
    nonce: Option<String>,
    tx_hash: Option<String>,
    block_number: Option<i64>,
    log_index: Option<i64>,
    entry_id: Option<String>,
    amount_ledger: Option<String>,
    amount_chain: Option<String>,
}

impl ExceptionColumns {
    fn of(i: &ReconItem) -> Result<ExceptionColumns, MeteringError> {
        Ok(ExceptionColumns {
            class: i.class.as_str(),
            payer: hex_address(i.payer),
            pay_to: hex_address(i.pay_to),
            chain_to: i.chain_to.map(hex_address),
            nonce: i.nonce.map(hex_b256),
            tx_hash: i.tx_hash.map(hex_b256),
            block_number: i.block_number.map(|v| to_i64("block_number", v)).transpose()?,
            log_index: i.log_index.map(|v| to_i64("log_index", v)).transpose()?,
            entry_id: i.entry_id.as_ref().map(|id| id.as_str().to_owned()),
            amount_ledger: i.amount_ledger.map(|v| v.to_string()),
            amount_chain: i.amount_chain.map(|v| v.to_string()),
        })
    }
}

/// Reconciliation: the entries to check against the chain, and the record of runs.
impl Ledger {
    /// Entries of (chain, asset) paid to `pay_to` that say money moved: `settled` and
    /// `refund_owed` with their block in `[from_block, to_block]` (either bound optional), and
    /// every `settling` entry (no block yet). Ordered by block, log index, id; at most `limit`
    /// (a caller that needs them all treats `limit` rows as "maybe more").
    pub async fn settled_entries(
        &self,
        chain_id: u64,
        asset: Address,
        pay_to: Address,
        from_block: Option<u64>,
        to_block: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        const OP: &str = "settled_entries";
        let chain_id = to_i64("chain_id", chain_id)?;
        let from = from_block.map(|v| to_i64("from_block", v)).transpose()?;
        let to = to_block.map(|v| to_i64("to_block", v)).transpose()?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<EntryRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_SETTLED)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .bind(hex_address(pay_to))
                        .bind(from)
                        .bind(to)
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    /// Records a reconciliation run with its counts, totals and every exception (item not
    /// matched), in one transaction; returns the run's id.
    pub async fn record_recon_run(&self, run: &NewReconRun<'_>) -> Result<i64, MeteringError> {
        const OP: &str = "record_recon_run";
        let scope = run.scope;
        let chain_id = to_i64("chain_id", scope.chain_id)?;
        let from = to_i64("from_block", scope.from_block)?;
        let to = to_i64("to_block", scope.to_block)?;
        let cursor = run.cursor_block.map(|v| to_i64("cursor_block", v)).transpose()?;
        let started = to_i64("started_unix_s", run.started_unix_s)?;
        let finished = to_i64("finished_unix_s", run.finished_unix_s)?;
        let totals = &run.report.totals;
        let mut counts = Vec::with_capacity(ReconClass::ALL.len());
        for class in ReconClass::ALL {
            counts.push(to_i64("count", totals.counts.get(&class).copied().unwrap_or(0))?);
        }
        let holds = i64::from(run.report.tie_out(&scope.pay_to).holds);
        let exceptions = run.report.exceptions().map(ExceptionColumns::of).collect::<Result<Vec<_>, _>>()?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let mut insert = sqlx::query_scalar(INSERT_RUN)
                    .bind(chain_id)
                    .bind(hex_address(scope.asset))
                    .bind(from)
                    .bind(to)
                    .bind(cursor)
                    .bind(started)
                    .bind(finished);
                for n in &counts {
                    insert = insert.bind(*n);
                }
                let id: i64 = insert
                    .bind(totals.chain_total.to_string())
                    .bind(totals.ledger_total.to_string())
                    .bind(totals.matched_total.to_string())
                    .bind(holds)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(err)?;
                for x in &exceptions {
                    sqlx::query(INSERT_EXCEPTION)
                        .bind(id)
                        .bind(x.class)
                        .bind(&x.payer)
                        .bind(&x.pay_to)
                        .bind(x.chain_to.as_deref())
                        .bind(x.nonce.as_deref())
                        .bind(x.tx_hash.as_deref())
                        .bind(x.block_number)
                        .bind(x.log_index)
                        .bind(x.entry_id.as_deref())
                        .bind(x.amount_ledger.as_deref())
                        .bind(x.amount_chain.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok(id)
            })
        })
        .await
    }

    /// The recorded runs of (chain, asset), oldest first, at most `limit`.
    pub async fn recon_runs(&self, chain_id: u64, asset: Address, limit: u32) -> Result<Vec<ReconRun>, MeteringError> {
        const OP: &str = "recon_runs";
        let chain_id = to_i64("chain_id", chain_id)?;
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM recon_runs WHERE chain_id = $1 AND asset = $2 ORDER BY id LIMIT $3");
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<RunRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(&sql)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(RunRow::into_run).collect()
    }

    /// The cursor to resume (chain, asset) from: the highest `cursor_block` of its recorded
    /// runs (the last block fully reconciled), or `None` when no run has one.
    pub async fn recon_cursor(&self, chain_id: u64, asset: Address) -> Result<Option<u64>, MeteringError> {
        const OP: &str = "recon_cursor";
        let chain_id = to_i64("chain_id", chain_id)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let cursor: Option<i64> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_scalar(SELECT_CURSOR)
                        .bind(chain_id)
                        .bind(hex_address(asset))
                        .fetch_one(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        cursor
            .map(|c| {
                u64::try_from(c).map_err(|_| MeteringError::InvalidValue {
                    what: "recon_runs.cursor_block",
                    reason: format!("negative: {c}"),
                })
            })
            .transpose()
    }

    /// The exceptions recorded with a run, in recording order.
    pub async fn recon_exceptions(&self, run_id: i64) -> Result<Vec<ReconException>, MeteringError> {
        const OP: &str = "recon_exceptions";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<ExceptionRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_EXCEPTIONS).bind(run_id).fetch_all(pool).await.map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(ExceptionRow::into_exception).collect()
    }

    /// Appends a resolution note to an exception (`who`: 1 to 256 bytes; `why`: 1 to 2048);
    /// returns the note's id. Notes are never edited or deleted (the schema refuses).
    pub async fn add_recon_note(
        &self,
        exception_id: i64,
        who: &str,
        why: &str,
        now_unix_s: u64,
    ) -> Result<i64, MeteringError> {
        const OP: &str = "add_recon_note";
        for (what, value, max) in [("note author", who, LABEL_BYTES_MAX), ("note", why, REASON_BYTES_MAX)] {
            if value.is_empty() {
                return Err(MeteringError::InvalidValue { what, reason: "must not be empty".to_owned() });
            }
            check_len(what, value, max)?;
        }
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool| {
                sqlx::query_scalar(INSERT_NOTE)
                    .bind(exception_id)
                    .bind(who)
                    .bind(why)
                    .bind(now)
                    .fetch_one(pool)
                    .await
                    .map_err(err)
            })
        })
        .await
    }

    /// An exception's notes, oldest first.
    pub async fn recon_notes(&self, exception_id: i64) -> Result<Vec<ReconNote>, MeteringError> {
        const OP: &str = "recon_notes";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(i64, i64, String, String, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(SELECT_NOTES).bind(exception_id).fetch_all(pool).await.map_err(err)
                })
            })
            .await?;
        rows.into_iter()
            .map(|(id, exception_id, who, why, at)| {
                Ok(ReconNote { id, exception_id, who, why, at_unix_s: unsigned_column("at_unix_s", at)? })
            })
            .collect()
    }
}

fn check_lease_names(name: &str, holder: &str) -> Result<(), MeteringError> {
    for (what, value) in [("lease name", name), ("lease holder", holder)] {
        if value.is_empty() {
            return Err(MeteringError::InvalidValue { what, reason: "must not be empty".to_owned() });
        }
        check_len(what, value, LABEL_BYTES_MAX)?;
    }
    Ok(())
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

    #[test]
    fn hex_is_lowercase() {
        // Goal: addresses and hashes are stored in one lowercase 0x spelling.
        let address: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse().unwrap();
        assert_eq!(hex_address(address), "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913");
        assert_eq!(hex_b256(B256::repeat_byte(0xAB)), format!("0x{}", "ab".repeat(32)));
    }

    #[tokio::test]
    async fn in_memory_sqlite_is_one_database() {
        // Goal: `sqlite::memory:` gives one migrated database that every call sees, even with a larger pool asked for.
        let opts = LedgerOptions { max_connections: 4, ..LedgerOptions::default() };
        let ledger = Ledger::connect("sqlite::memory:", opts).await.unwrap();
        let entry = NewEntry {
            chain_id: 1,
            asset: Address::repeat_byte(1),
            payer: Address::repeat_byte(2),
            pay_to: Address::repeat_byte(3),
            nonce: B256::repeat_byte(4),
            amount: AtomicAmount::new(5).unwrap(),
            valid_before_unix_s: 10,
            provider: "p".to_owned(),
            route: "r".to_owned(),
            method: "GET".to_owned(),
            path: "/".to_owned(),
            mode: crate::SettlementMode::After,
            payment: "{}".to_owned(),
            price_version: None,
            credential: None,
            credential_version: None,
            now_unix_s: 1,
        };
        let (a, b) = tokio::join!(
            ledger.reserve(&entry),
            ledger.entry_by_authorization(1, entry.asset, entry.payer, entry.nonce)
        );
        let id = a.unwrap();
        assert!(b.unwrap().is_none_or(|e| e.id == id));
        assert_eq!(ledger.entry(&id).await.unwrap().unwrap().state, EntryState::Reserved);
        assert!(matches!(ledger.reserve(&entry).await, Err(MeteringError::DuplicateAuthorization { .. })));
    }

    #[tokio::test]
    async fn connection_errors_hide_credentials() {
        // Goal: a failed connection reports neither the URL nor its password, in Display or Debug.
        let opts = LedgerOptions { acquire_timeout_ms: 200, statement_timeout_ms: 200, ..LedgerOptions::default() };
        let err = Ledger::connect("postgres://tollgate:hunter2@127.0.0.1:1/ledger", opts).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2") && !text.contains("127.0.0.1"), "{text}");
        assert!(err.is_retryable(), "{err:?}");
        let err = Ledger::connect("postgres://tollgate:hunter2@[bad/ledger", opts).await.unwrap_err();
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
