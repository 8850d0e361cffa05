//! Crash recovery: SIGKILL the gateway with paid calls in flight, restart it, and check that
//! every ledger entry ends terminal, each settled entry matches exactly one on-chain
//! transfer, and nothing unsettled was charged.

use std::path::Path;
use std::time::Duration;

use alloy::providers::Provider;
use alloy_primitives::{Address, U256};
use serde_json::json;
use tollgate_metering::{EntryState, Ledger, LedgerOptions};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, PaymentBuilder, PgDatabase, ProviderConfig, Reply,
    RouteConfig, TestChain, TestGateway, anvil_key, random_key, v2_header,
};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header, v2};

pub(crate) const KEY: &str = "sk-crash-test-upstream-key";
pub(crate) const PRICE: u64 = 1_000;

/// An upstream that insists on the injected bearer key and answers after 150 ms.
pub(crate) async fn slow_upstream() -> String {
    let reply = Reply::with(|req| {
        if req.header("authorization") != Some(format!("Bearer {KEY}")) {
            return Reply::body(401, "text/plain; charset=utf-8", "no key");
        }
        Reply::body(200, "text/plain; charset=utf-8", "ok").delayed(Duration::from_millis(150))
    });
    MockUpstream::answering(reply).await.unwrap().detach()
}

pub(crate) fn write_config(path: &Path, db_url: &str, rpc: &str, upstream: &str, payee: Address, grace_s: u64) {
    ConfigBuilder::new()
        .admin_listen()
        .database(db_url)
        .relayer_env("CRASH_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 20u64)
        .set("settlement", "receipt_timeout_ms", 30_000u64)
        .set("settlement", "recovery_interval_ms", 200u64)
        .set("settlement", "recovery_grace_s", grace_s)
        .network(NetworkConfig::base(rpc))
        .provider(
            ProviderConfig::new("slow", payee, upstream)
                .credential_header("CRASH_API_KEY")
                .route(RouteConfig::new("/after/{x}", PRICE))
                .route(RouteConfig::new("/deferred/{x}", PRICE).settlement("deferred")),
        )
        .write(path)
        .unwrap();
}

/// Starts `tollgate serve` and returns it with its base URL.
pub(crate) async fn spawn_gateway(config: &Path) -> (TestGateway, String) {
    let env = [("CRASH_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("CRASH_API_KEY", KEY.to_owned())];
    crate::serve::spawn_serve(config, &env, Default::default()).await
}

pub(crate) async fn offer(http: &reqwest::Client, url: &str) -> v2::PaymentRequirements {
    let resp = http.get(url).send().await.unwrap();
    let raw = resp.headers()["payment-required"].as_bytes().to_vec();
    let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX).unwrap();
    challenge.accepts[0].clone()
}

async fn crash_and_recover(db_url: String) {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let upstream = slow_upstream().await;
    let payee = random_key().address();
    let payer = random_key();
    chain.mint(payer.address(), 1_000_000).await.unwrap();
    // Blocks every second: settlements are caught mid-flight by the kill.
    chain.rpc("evm_setIntervalMining", json!([1])).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    write_config(&config, &db_url, &chain.anvil.url, &upstream, payee, 3600);
    let (mut gateway, url) = spawn_gateway(&config).await;

    let http = tollgate_test_support::http();
    let now = chain.latest_timestamp().await.unwrap();
    let after_offer = offer(&http, &format!("{url}/after/x")).await;
    let deferred_offer = offer(&http, &format!("{url}/deferred/x")).await;
    let mut calls = Vec::new();
    for i in 0..24 {
        let (path, offer) = if i % 2 == 0 { ("after", &after_offer) } else { ("deferred", &deferred_offer) };
        let header = v2_header(&PaymentBuilder::new(offer, &payer, now));
        let (http, u) = (http.clone(), format!("{url}/{path}/{i}"));
        calls.push(tokio::spawn(async move {
            http.get(u).header("payment-signature", header).send().await.map(|r| r.status())
        }));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gateway.start_kill().unwrap(); // SIGKILL
    gateway.wait().await.unwrap();
    for c in calls {
        let _ = c.await; // some answered, the rest lost their connection
    }

    let ledger = Ledger::connect(&db_url, LedgerOptions::default()).await.unwrap();
    let before = ledger.entries().unfinished(u64::MAX / 2, 1000).await.unwrap().len();
    eprintln!("entries unfinished at the kill: {before}");

    // Restart with no grace period: every unfinished entry is now abandoned.
    write_config(&config, &db_url, &chain.anvil.url, &upstream, payee, 0);
    let (mut gateway, _url) = spawn_gateway(&config).await;
    let mut left = usize::MAX;
    for _ in 0..300 {
        left = ledger.entries().unfinished(u64::MAX / 2, 1000).await.unwrap().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.start_kill().unwrap();
    if left != 0 {
        report_stuck(&ledger, &chain).await;
    }
    assert_eq!(left, 0, "every entry must end terminal after recovery");

    // Every entry is terminal; each settled one matches exactly one on-chain transfer.
    let query = tollgate_metering::SpendQuery {
        chain_id: 8453,
        asset: chain.token,
        payer: payer.address(),
        provider: None,
        route: None,
        created_from_unix_s: None,
        created_before_unix_s: None,
    };
    let totals = ledger.spend().totals(&query).await.unwrap();
    assert_eq!(totals.pending.count, 0);
    let balance = chain.balance(payee).await.unwrap();
    if balance != U256::from(totals.settled.amount + totals.refund_owed.amount) {
        report_moved_unsettled(&ledger, &chain, payer.address()).await;
    }
    assert_eq!(
        balance,
        U256::from(totals.settled.amount + totals.refund_owed.amount),
        "payee received exactly the settled (and owed-back) total"
    );
    assert!(totals.settled.count > 0, "some calls settled");

    let mut tx_hashes = std::collections::HashSet::new();
    // Walk every entry through its authorization to check its on-chain state.
    let all = ledger.entries().of_payer(8453, chain.token, payer.address(), 1000).await.unwrap();
    assert_eq!(all.len() as u64, totals.settled.count + totals_other(&all));
    for e in &all {
        let used = chain.authorization_used(e.payer, e.nonce).await.unwrap();
        match e.state {
            // Settled by the sweep after the process died before answering (`after` mode):
            // the agent never had the response, so the payment is owed back.
            EntryState::RefundOwed => {
                assert!(used, "refund owed on entry {} that moved no money", e.id);
                assert_eq!(e.reason.as_deref(), Some("recovery_delivery_failed"));
                let tx = e.tx_hash.unwrap();
                assert!(tx_hashes.insert(tx), "two entries claim transaction {tx}");
            }
            EntryState::Settled => {
                assert!(used, "settled entry {} without an on-chain authorization", e.id);
                let tx = e.tx_hash.unwrap();
                assert!(tx_hashes.insert(tx), "two entries claim transaction {tx}");
                let receipt = chain.provider.get_transaction_receipt(tx).await.unwrap().expect("mined");
                assert!(receipt.status());
                assert_eq!(receipt.block_number, e.block_number);
            }
            EntryState::Voided | EntryState::SettleFailed => {
                assert!(!used, "entry {} moved money but is {:?}", e.id, e.state)
            }
            other => panic!("entry {} left in {other:?}", e.id),
        }
    }
    ledger.close().await;
}

/// Prints every unfinished entry with its events and the relayer's nonces, so that a failure
/// of the recovery assertion shows where recovery stopped.
async fn report_stuck(ledger: &Ledger, chain: &TestChain) {
    let relayer = anvil_key(9).address();
    let mined = chain.provider.get_transaction_count(relayer).latest().await;
    let pending = chain.provider.get_transaction_count(relayer).pending().await;
    eprintln!("relayer {relayer}: mined nonce {mined:?}, pending nonce {pending:?}");
    for e in ledger.entries().unfinished(u64::MAX / 2, 1000).await.unwrap() {
        eprintln!(
            "stuck entry {} mode {:?} state {:?} reason {:?} tx {:?}",
            e.id, e.mode, e.state, e.reason, e.tx_hash
        );
        for ev in ledger.entries().events(&e.id).await.unwrap() {
            eprintln!(
                "  event {:?} -> {:?} cause {} tx {:?} detail {:?} at {}",
                ev.from_state, ev.to_state, ev.cause, ev.tx_hash, ev.detail, ev.at_unix_s
            );
        }
    }
}

/// On a balance mismatch: every entry whose authorization moved on chain while the ledger
/// does not count it as settled or owed back, with its events (seen once in CI at 29b4ccf on
/// PostgreSQL: the payee held two prices more than the ledger's total).
async fn report_moved_unsettled(ledger: &Ledger, chain: &TestChain, payer: alloy_primitives::Address) {
    report_stuck(ledger, chain).await;
    for e in ledger.entries().of_payer(8453, chain.token, payer, 1000).await.unwrap() {
        let used = chain.authorization_used(e.payer, e.nonce).await.unwrap();
        if used && !matches!(e.state, EntryState::Settled | EntryState::RefundOwed) {
            eprintln!(
                "moved but not counted: entry {} mode {:?} state {:?} reason {:?} tx {:?}",
                e.id, e.mode, e.state, e.reason, e.tx_hash
            );
            for ev in ledger.entries().events(&e.id).await.unwrap() {
                eprintln!(
                    "  event {:?} -> {:?} cause {} tx {:?} detail {:?} at {}",
                    ev.from_state, ev.to_state, ev.cause, ev.tx_hash, ev.detail, ev.at_unix_s
                );
            }
        }
    }
}

fn totals_other(all: &[tollgate_metering::Entry]) -> u64 {
    all.iter().filter(|e| e.state != EntryState::Settled).count() as u64
}

// Goal: SIGKILL with paid calls in flight (after and deferred modes, blocks mined every
// second) loses nothing: after a restart every entry is terminal, settled entries match
// on-chain transfers one to one, and unsettled authorizations are untouched (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_and_recover(format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display())).await;
}

// Goal: the same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_postgres() {
    let Some(db) = PgDatabase::create("crash").await else { return };
    crash_and_recover(db.url.clone()).await;
    db.drop_now().await;
}
