//! Throw-away PostgreSQL databases for tests, on the server named by
//! `TOLLGATE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! With `TOLLGATE_SKIP_POSTGRES=1` (set by the test command on a machine without
//! PostgreSQL) a visible `SKIPPED postgres` line is printed and `None` returned; otherwise an
//! unreachable server fails the test, as CI requires.

use sqlx::Connection;

/// The admin URL of the test server.
pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test; dropped by [`PgDatabase::drop_now`].
#[derive(Debug)]
pub struct PgDatabase {
    /// URL of the fresh database.
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// Creates a fresh database, or returns `None` when PostgreSQL tests are skipped.
    pub async fn create(test: &str) -> Option<PgDatabase> {
        if std::env::var("TOLLGATE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED postgres: {test} (TOLLGATE_SKIP_POSTGRES=1)");
            return None;
        }
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is required (set TOLLGATE_SKIP_POSTGRES=1 to skip): {e}")
        });
        let name = format!("tollgate_t_{}", hex_id());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
        Some(PgDatabase { url: format!("{base}/{name}"), name })
    }

    /// Drops the database (connections still open are terminated).
    pub async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
        }
    }
}

fn hex_id() -> String {
    let bytes: [u8; 8] = alloy_primitives::B256::random().0[..8].try_into().expect("8 bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
