//! Integration tests of the ledger against real databases: every test body runs on SQLite (a
//! temporary file) and on PostgreSQL (a fresh database per test on the server named by
//! `TOLLGATE_TEST_PG_URL`, dropped afterwards). `TOLLGATE_SKIP_POSTGRES=1` skips the PostgreSQL
//! half with a visible message; without it an unreachable server fails the test.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod concurrency;
mod control;
mod layers;
mod lifecycle;
mod payment_ids;
mod queries;
mod reconcile;
mod schema;
mod tls;
mod wal;

use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tollgate_metering::{
    AtomicAmount, Engine, EntryId, EntryState, Ledger, LedgerOptions, NewEntry, SettlementMode, Transition,
};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One engine's database for one test: the ledger under test, the URL (to open more ledgers on
/// the same database) and a raw pool to bypass the ledger with plain SQL.
pub struct Db {
    pub engine: Engine,
    pub url: String,
    pub ledger: Ledger,
    pub raw: Raw,
}

impl Db {
    /// Makes the database itself refuse (`refused by test`) every `event` (`INSERT` or
    /// `UPDATE`) on `ledger_entries` whose row matches `when` (SQL over `NEW`), through a
    /// trigger named `name`, on either engine.
    pub async fn refuse_writes(&self, name: &str, event: &str, when: &str) -> anyhow::Result<()> {
        let trigger = match self.engine {
            Engine::Sqlite => format!(
                "CREATE TRIGGER {name} BEFORE {event} ON ledger_entries WHEN {when} \
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            ),
            Engine::Postgres => {
                let function = format!(
                    "CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN \
                     RAISE EXCEPTION 'refused by test'; END $$ LANGUAGE plpgsql"
                );
                self.raw.exec(&function).await.map_err(anyhow::Error::msg)?;
                format!(
                    "CREATE TRIGGER {name} BEFORE {event} ON ledger_entries FOR EACH ROW \
                     WHEN ({when}) EXECUTE FUNCTION {name}()"
                )
            }
        };
        self.raw.exec(&trigger).await.map(|_| ()).map_err(anyhow::Error::msg)
    }
}

/// A pool that runs SQL as written, as an operator (or a bug) could.
pub enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    /// Runs one statement; the database's error message on failure.
    pub async fn exec(&self, sql: &str) -> Result<u64, String> {
        let done = match self {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|d| d.rows_affected()),
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|d| d.rows_affected()),
        };
        done.map_err(|e| e.to_string())
    }

    /// Runs one statement in a transaction that is then rolled back, so the database is unchanged.
    pub async fn exec_rolled_back(&self, sql: &str) -> Result<u64, String> {
        match self {
            Raw::Sqlite(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let done = sqlx::query(sql).execute(&mut *tx).await.map(|d| d.rows_affected());
                tx.rollback().await.unwrap();
                done.map_err(|e| e.to_string())
            }
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let done = sqlx::query(sql).execute(&mut *tx).await.map(|d| d.rows_affected());
                tx.rollback().await.unwrap();
                done.map_err(|e| e.to_string())
            }
        }
    }

    /// A single integer from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }
}

/// Options for tests: short waits so that a hang fails fast.
pub fn test_options() -> LedgerOptions {
    LedgerOptions {
        max_connections: 8,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 5_000,
        migrate_timeout_ms: 30_000,
        sqlite_synchronous_full: true,
    }
}

/// Runs `body` once per engine: SQLite, then PostgreSQL (or prints why PostgreSQL is skipped).
/// Panics, naming the engine, if the body fails on either.
pub async fn each_engine<F, Fut>(body: F)
where
    F: Fn(Db) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    // SQLite: a file in a temporary directory, so that several pools can open it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let ledger = Ledger::connect(&url, test_options()).await.expect("connect sqlite");
    let raw = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(SqliteConnectOptions::from_str(&url).unwrap().foreign_keys(true))
        .await
        .unwrap();
    let db = Db { engine: Engine::Sqlite, url, ledger, raw: Raw::Sqlite(raw) };
    run_body("sqlite", body(db)).await;

    if std::env::var("TOLLGATE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        // Straight to stderr: libtest captures `eprintln!`, and a skip must be visible.
        let _ = writeln!(std::io::stderr(), "SKIPPED postgres: TOLLGATE_SKIP_POSTGRES=1 (only SQLite ran)");
        return;
    }
    let admin_url = std::env::var("TOLLGATE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL (TOLLGATE_TEST_PG_URL) unreachable: {e}; set TOLLGATE_SKIP_POSTGRES=1 to skip it")
        });
    let name = format!("tollgate_t_{}", hex_random());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    let url = with_database(&admin_url, &name);
    let ledger = Ledger::connect(&url, test_options()).await;
    let result = match ledger {
        Ok(ledger) => {
            let raw = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(PgConnectOptions::from_str(&url).unwrap())
                .await
                .unwrap();
            let db = Db { engine: Engine::Postgres, url, ledger, raw: Raw::Postgres(raw) };
            tokio::spawn(body(db)).await
        }
        Err(e) => Ok(Err(anyhow::Error::new(e).context("connect postgres"))),
    };
    // WITH (FORCE) ends the test's own connections, which may still be open in dropped pools.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.unwrap();
    finish("postgres", result);
}

async fn run_body(engine: &str, body: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
    finish(engine, tokio::spawn(body).await);
}

fn finish(engine: &str, result: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("[{engine}] {e:#}"),
        Err(join) if join.is_panic() => {
            eprintln!("[{engine}] test body panicked");
            std::panic::resume_unwind(join.into_panic())
        }
        Err(join) => panic!("[{engine}] test body did not finish: {join}"),
    }
}

/// The same server URL with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn hex_random() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

pub const CHAIN_ID: u64 = 8453;

pub fn asset() -> Address {
    // Base USDC, checksummed: the ledger must store it lowercase.
    "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse().unwrap()
}

pub fn payer() -> Address {
    Address::repeat_byte(0xA1)
}

pub fn pay_to() -> Address {
    Address::repeat_byte(0xB2)
}

pub fn nonce(n: u64) -> B256 {
    B256::from(U256::from(n))
}

pub fn hash(n: u64) -> B256 {
    B256::from(U256::from(0xface_0000_u64 + n))
}

/// A reservation of `amount` by [`payer`], distinguished by `n` (its nonce).
pub fn new_entry(n: u64, amount: u64, now_unix_s: u64) -> NewEntry {
    NewEntry {
        chain_id: CHAIN_ID,
        asset: asset(),
        payer: payer(),
        pay_to: pay_to(),
        nonce: nonce(n),
        amount: AtomicAmount::new(amount).unwrap(),
        valid_before_unix_s: now_unix_s + 300,
        provider: "openai".to_owned(),
        route: "chat".to_owned(),
        method: "POST".to_owned(),
        path: "/v1/chat/completions".to_owned(),
        mode: SettlementMode::After,
        payment: r#"{"x402Version":2,"payload":{"signature":"0x00"}}"#.to_owned(),
        price_version: None,
        credential: None,
        credential_version: None,
        now_unix_s,
    }
}

pub fn settled(n: u64) -> Transition {
    Transition::Settled { tx_hash: hash(n), block_number: 1_000 + n, block_hash: hash(500 + n), log_index: n }
}

/// Reserves entry `n` and walks it through the API to `state`.
pub async fn entry_in(ledger: &Ledger, state: EntryState, n: u64, now: u64) -> anyhow::Result<EntryId> {
    let id = ledger.entries().reserve(&new_entry(n, 1_000, now)).await?;
    let path: &[Transition] = match state {
        EntryState::Reserved => &[],
        EntryState::Forwarded => &[Transition::Forwarded { upstream_status: Some(200) }],
        EntryState::Settling => &[Transition::Settling { tx_hash: hash(n) }],
        EntryState::Settled => &[Transition::Settling { tx_hash: hash(n) }, settled(n)],
        EntryState::SettleFailed => {
            &[Transition::Settling { tx_hash: hash(n) }, Transition::SettleFailed { reason: "reverted".to_owned() }]
        }
        EntryState::Voided => &[Transition::Voided { reason: "upstream 502".to_owned() }],
        EntryState::RefundOwed => &[
            Transition::Settling { tx_hash: hash(n) },
            settled(n),
            Transition::RefundOwed { reason: "upstream 500 after settlement".to_owned() },
        ],
    };
    for t in path {
        ledger.entries().transition(&id, t.clone(), "test_setup", None, now).await?;
    }
    Ok(id)
}
