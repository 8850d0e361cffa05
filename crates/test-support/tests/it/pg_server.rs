//! `ThrowawayPg`: a server of the test's own that goes away and comes back on the same port
//! with its data.

use std::time::Duration;

use sqlx::Connection;
use tollgate_test_support::ThrowawayPg;

async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url))
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
}

// Goal: data written before an immediate stop is there after a start; while stopped,
// connecting fails (refused), and open connections are cut.
#[tokio::test]
async fn stop_then_start_keeps_port_and_data() {
    let Some(mut pg) = ThrowawayPg::start_new("stop_then_start").await.unwrap() else { return };
    let url = pg.url();
    let mut conn = connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t (x int)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO t VALUES (42)").execute(&mut conn).await.unwrap();

    pg.stop().await.unwrap();
    assert!(!pg.is_running());
    assert!(connect(&url).await.is_err(), "connect must fail while stopped");
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err(), "open connections are cut");

    pg.start().await.unwrap();
    assert_eq!(pg.url(), url, "same port");
    let mut conn = connect(&url).await.unwrap();
    let (x,): (i32,) = sqlx::query_as("SELECT x FROM t").fetch_one(&mut conn).await.unwrap();
    assert_eq!(x, 42);
    // Other databases can be created and reached by name.
    sqlx::query("CREATE DATABASE other").execute(&mut conn).await.unwrap();
    connect(&pg.url_of("other")).await.unwrap();
}
