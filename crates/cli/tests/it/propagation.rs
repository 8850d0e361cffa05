//! Two `tollgate serve` processes on one PostgreSQL database: a change made through one
//! process's admin API applies on the other within a second (NOTIFY, with the poll as
//! fallback) — a wallet revocation, a credential rotation, and a price change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use serde_json::{Value, json};
use tollgate_metering::{Actor, Ledger, LedgerOptions, Role, token_hash};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, PaymentBuilder, PgDatabase, ProviderConfig, Reply,
    RouteConfig, TestChain, anvil_key, random_key, v2_header,
};

use crate::crash::offer;

const VAULT_KEY: &str = "0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff0";

/// An upstream that records the Authorization header of every call.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let reply = Reply::with(move |req| {
        record.lock().unwrap().push(req.header("authorization").unwrap_or_default());
        Reply::body(200, "text/plain; charset=utf-8", "ok")
    });
    (MockUpstream::answering(reply).await.unwrap().detach(), seen)
}

fn write_config(path: &std::path::Path, db_url: &str, rpc: &str, upstream: &str, payee: Address) {
    ConfigBuilder::new()
        .admin_listen()
        .database(db_url)
        .vault_env("PROP_VAULT_KEY")
        .set("control", "poll_interval_ms", 250u64)
        .relayer_env("PROP_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 20u64)
        .network(NetworkConfig::base(rpc))
        .provider(
            ProviderConfig::new("vaulted", payee, upstream)
                .credential_vault("main")
                .route(RouteConfig::new("/v/{x}", 1000)),
        )
        .write(path)
        .unwrap();
}

struct Process {
    _child: tollgate_test_support::TestGateway,
    url: String,
    admin: String,
}

async fn start(config: &std::path::Path) -> Process {
    let env =
        [("PROP_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("PROP_VAULT_KEY", VAULT_KEY.to_owned())];
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let (child, url) = crate::serve::spawn_serve(config, &env, log.clone()).await;
    // `serve` prints the admin address before the line spawn_serve waits for.
    let admin = log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split("admin API on ").nth(1).map(|u| u.trim().to_owned()))
        .expect("the admin address is printed");
    Process { _child: child, url, admin }
}

async fn admin(http: &reqwest::Client, p: &Process, token: &str, method: &str, path: &str, body: Value) -> Value {
    let req = http.request(method.parse().unwrap(), format!("{}{path}", p.admin)).bearer_auth(token);
    let req = if body.is_null() { req } else { req.json(&body) };
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
    resp.json().await.unwrap()
}

// Goal: with two gateway processes on one PostgreSQL database, a wallet revoked through A's
// admin API is denied by B (403 wallet_revoked) within 1 s; a credential rotated through A
// is injected by B within 1 s; a price changed through A is quoted by B within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_process_within_a_second() {
    let Some(pg) = PgDatabase::create("propagation").await else { return };
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let (upstream, seen) = recording_upstream().await;
    let payee = random_key().address();
    let payer = random_key();
    chain.mint(payer.address(), 1_000_000).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.toml");
    write_config(&config, &pg.url, &chain.anvil.url, &upstream, payee);

    // The first operator token, made in the database as `tollgate admin bootstrap` does.
    let ledger = Ledger::connect(&pg.url, LedgerOptions::default()).await.unwrap();
    let token = tollgate_gateway::admin::new_token();
    ledger.tokens().create(Role::Operator, None, &token_hash(&token), "test", &Actor("test".into()), 1).await.unwrap();

    let a = start(&config).await;
    let b = start(&config).await;
    let http = tollgate_test_support::http();
    let upload = |s: &str| json!({ "secret": s });
    admin(&http, &a, &token, "POST", "/admin/providers/vaulted/credentials/main", upload("key-1")).await;

    let now = chain.latest_timestamp().await.unwrap();
    let mut n = 0u32;
    // Pays B until `check` accepts (status, last injected key), within `within`.
    let mut pay_b_until = async |check: &dyn Fn(u16, &str) -> bool, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            n += 1;
            let path = format!("{}/v/{n}", b.url);
            let resp = http.get(&path).send().await.unwrap();
            let status = if resp.status() == 402 {
                let accepted = offer(&http, &path).await;
                let header = v2_header(&PaymentBuilder::new(&accepted, &payer, now));
                http.get(&path).header("payment-signature", header).send().await.unwrap().status().as_u16()
            } else {
                resp.status().as_u16()
            };
            let last = seen.lock().unwrap().last().cloned().unwrap_or_default();
            if check(status, &last) {
                return;
            }
            assert!(Instant::now() < deadline, "B: status {status}, injected `{last}`");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    pay_b_until(&|s, k| s == 200 && k == "Bearer key-1", Duration::from_secs(5)).await;

    // Rotation through A; B injects the new version within a second.
    admin(&http, &a, &token, "POST", "/admin/providers/vaulted/credentials/main", upload("key-2")).await;
    let t = Instant::now();
    pay_b_until(&|s, k| s == 200 && k == "Bearer key-2", Duration::from_secs(1)).await;
    eprintln!("rotation reached the other process after {:?}", t.elapsed());

    // Revocation through A; B refuses the wallet at once.
    let wallet = format!("{:#x}", payer.address());
    admin(&http, &a, &token, "POST", &format!("/admin/wallets/{wallet}/revoke"), Value::Null).await;
    let t = Instant::now();
    pay_b_until(&|s, _| s == 403, Duration::from_secs(1)).await;
    eprintln!("revocation reached the other process after {:?}", t.elapsed());
    admin(&http, &a, &token, "POST", &format!("/admin/wallets/{wallet}/reinstate"), Value::Null).await;

    // A price change through A; B quotes it within a second.
    let spec = json!({ "path": "/v/{x}", "price_atomic": "4321" });
    admin(&http, &a, &token, "PUT", "/admin/providers/vaulted/endpoints", spec).await;
    let t = Instant::now();
    loop {
        let accepted = offer(&http, &format!("{}/v/price", b.url)).await;
        if accepted.amount.to_string() == "4321" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "B still quotes {}", accepted.amount);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.close().await;
    drop((a, b));
    pg.drop_now().await;
}
