//! `tollgate reconcile` as a process, against what `tollgate serve` settled.

use std::process::Command;

use alloy::providers::Provider;
use serde_json::Value;
use tollgate_test_support::{Deployment, PaymentBuilder, TestChain, random_key, v2_header};

use crate::crash::{PRICE, offer, slow_upstream, spawn_gateway, write_config};

// Goal: after two paid calls through `tollgate serve`, `tollgate reconcile --json` over the
// chain's blocks reports both as matched, the on-chain total equal to the matched total (in
// USDC with the atomic integer beside it, never hex), the tie-out holding, and a run recorded;
// the summary line says the amounts in USDC; `--csv` writes the documented header and an RFC
// 3339 UTC block time on every item row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_what_serve_settled() {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let upstream = slow_upstream().await;
    let payee = random_key().address();
    let payer = random_key();
    chain.mint(payer.address(), 1_000_000).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let config = dir.path().join("tollgate.toml");
    write_config(&config, &db_url, &chain.anvil.url, &upstream, payee, 3600);
    let (mut gateway, url) = spawn_gateway(&config).await;

    let http = tollgate_test_support::http();
    let now = chain.latest_timestamp().await.unwrap();
    let accepted = offer(&http, &format!("{url}/after/x")).await;
    for i in 0..2 {
        let header = v2_header(&PaymentBuilder::new(&accepted, &payer, now));
        let resp = http.get(format!("{url}/after/{i}")).header("payment-signature", header).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;

    let head = chain.provider.get_block_number().await.unwrap();
    let csv = dir.path().join("recon.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reconcile", "--config"])
        .arg(&config)
        .args(["--from-block", "0", "--to-block", &head.to_string(), "--confirmations", "1", "--json", "--csv"])
        .arg(&csv)
        .env("CRASH_RELAYER_KEY", format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes()))
        .env("CRASH_API_KEY", crate::crash::KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counts"]["matched"], 2, "{report:#}");
    assert_eq!(report["totals"]["chain"], "0.002", "{report:#}");
    assert_eq!(report["totals"]["chain_atomic"], (2 * PRICE).to_string());
    assert_eq!(report["totals"]["matched"], "0.002");
    assert_eq!(report["totals"]["matched_atomic"], (2 * PRICE).to_string());
    assert_eq!(report["tie_out"]["holds"], true);
    assert_eq!(report["tie_out"]["chain_total"], "0.002");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("chain 0.002 USDC matched 0.002 USDC ledger 0.002 USDC"), "{summary}");
    assert!(report["run_id"].is_number() || report["run_id"].is_string(), "{report:#}");
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("class,block_time,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "header + 2 items: {csv}");
    for row in csv.lines().skip(1) {
        let time = row.split(',').nth(1).unwrap();
        assert!(tollgate_recon::parse_time(time).is_ok() && time.ends_with('Z') && time.len() == 20, "{row}");
    }

    let reconcile = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["reconcile", "--config"])
            .arg(&config)
            .args(args)
            .env("CRASH_RELAYER_KEY", format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes()))
            .env("CRASH_API_KEY", crate::crash::KEY)
            .output()
            .unwrap()
    };
    // Goal (continued): `--resume` after a run whose cursor is the head has nothing to do;
    // a time range (unix seconds to RFC 3339) covers the same blocks and `--totals-csv`
    // writes the per-period totals; no range at all is a usage error.
    let out = reconcile(&["--resume", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to reconcile"));
    assert!(out.stdout.is_empty());
    let totals = dir.path().join("totals.csv");
    let totals_arg = totals.to_str().unwrap();
    let args = ["--from-time", "0", "--to-time", "2100-01-01T00:00:00Z", "--confirmations", "1", "--json"];
    let out = reconcile(&[&args[..], &["--totals-csv", totals_arg]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["from_block"].as_u64(), report["to_block"].as_u64()), (Some(0), Some(head)), "{report:#}");
    assert_eq!(report["counts"]["matched"], 2);
    let days = report["totals"]["by_day"].as_object().unwrap();
    assert_eq!(days.len(), 1, "{report:#}");
    assert_eq!(days.values().next().unwrap()["matched"], "0.002");
    assert_eq!(days.values().next().unwrap()["matched_atomic"], (2 * PRICE).to_string());
    let totals = std::fs::read_to_string(totals).unwrap();
    let header = "group,key,symbol,expected,expected_atomic,matched,matched_atomic,outstanding,outstanding_atomic";
    assert!(totals.starts_with(&format!("{header}\r\nday,")), "{totals}");
    assert!(totals.contains(",USDC,0.002,2000,0.002,2000,0,0\r\n"), "{totals}");
    let out = reconcile(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The control plane's change counter and the number of admin-log records and price versions.
async fn control_plane(db_url: &str) -> (i64, i64, i64) {
    let pool = sqlx::SqlitePool::connect(db_url).await.unwrap();
    let one = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool);
    let seen = (
        one("SELECT version FROM control_state").await.unwrap(),
        one("SELECT COUNT(*) FROM admin_log").await.unwrap(),
        one("SELECT COUNT(*) FROM price_versions").await.unwrap(),
    );
    pool.close().await;
    seen
}

// Goal: `tollgate reconcile` against a database whose control plane differs from the TOML
// (the file's prices changed after `serve` seeded it) records its run but writes no
// configuration: the change counter, the admin log and the price versions are unchanged.
// Starting `serve` on the same file does write them, so the difference is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_writes_no_configuration() {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let upstream = slow_upstream().await;
    let payee = random_key().address();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let config = dir.path().join("tollgate.toml");
    write_config(&config, &db_url, &chain.anvil.url, &upstream, payee, 3600);
    let (mut gateway, _) = spawn_gateway(&config).await;
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;

    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replace(&format!("price_atomic = \"{PRICE}\""), &format!("price_atomic = \"{}\"", 2 * PRICE));
    assert_ne!(changed, text);
    std::fs::write(&config, changed).unwrap();
    let before = control_plane(&db_url).await;

    let head = chain.provider.get_block_number().await.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["reconcile", "--config"])
        .arg(&config)
        .args(["--from-block", "0", "--to-block", &head.to_string(), "--confirmations", "1", "--json"])
        .env("CRASH_RELAYER_KEY", format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes()))
        .env("CRASH_API_KEY", crate::crash::KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["run_id"].is_number(), "{report:#}");
    assert_eq!(report["pay_to"], serde_json::json!([format!("{payee:#x}")]), "{report:#}");
    assert_eq!(control_plane(&db_url).await, before, "reconcile wrote configuration");

    let (mut gateway, _) = spawn_gateway(&config).await;
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
    let (version, admin_log, price_versions) = control_plane(&db_url).await;
    assert!(version > before.0 && price_versions > before.2, "serve seeds the changed prices: {before:?}");
    assert!(admin_log >= before.1);
}
