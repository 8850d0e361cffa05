//! `tollgate reconcile` as a process, against what `tollgate serve` settled.

use std::process::Command;

use alloy::providers::Provider;
use serde_json::Value;
use tollgate_test_support::{Deployment, PaymentBuilder, TestChain, random_key, v2_header};

use crate::crash::{PRICE, offer, slow_upstream, spawn_gateway, write_config};

// Goal: after two paid calls through `tollgate serve`, `tollgate reconcile --json` over the
// chain's blocks reports both as matched, the on-chain total equal to the matched total,
// the tie-out holding, and a run recorded; `--csv` writes the documented header.
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
    assert_eq!(report["totals"]["chain"], (2 * PRICE).to_string());
    assert_eq!(report["totals"]["matched"], (2 * PRICE).to_string());
    assert_eq!(report["tie_out"]["holds"], true);
    assert!(report["run_id"].is_number() || report["run_id"].is_string(), "{report:#}");
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("class,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "header + 2 items: {csv}");

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
    assert_eq!(days.values().next().unwrap()["matched"], (2 * PRICE).to_string());
    let totals = std::fs::read_to_string(totals).unwrap();
    assert!(totals.starts_with("group,key,expected,matched,outstanding\r\nday,"), "{totals}");
    let out = reconcile(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
