//! The demo behind `scripts/demo.sh` (the README's first command).
//!
//! Everything real, on loopback: anvil pretending to be Base (chain 8453) with our
//! EIP-3009 token at Base's USDC address; a demo weather API that requires an API key; the
//! tollgate gateway on embedded SQLite with that key injected at call time; and an agent
//! paying through `tollgate-client` from its own wallet, with a budget. It makes a handful
//! of calls — paid ones, a deferred one, an upstream failure that is not charged, and one
//! refused by the agent's budget — then prints what happened and ties the ledger to the
//! chain. It cleans up after itself and exits 0 only if the books balance. The stage is the
//! test kit's (`tollgate-test-support`): `TestChain`, `MockUpstream`, `ConfigBuilder` and an
//! in-process `TestGateway`, the same pieces the tests use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use tollgate_client::{ClientConfig, ClientError, HeaderMap, Method, PayingClient, SpendLimits};
use tollgate_metering::{EntryState, SpendQuery};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, ProviderConfig, Reply, RouteConfig, TestChain, TestGateway,
    anvil_key, random_key, sqlite_url,
};
use tollgate_verifier::SystemClock;

const API_KEY: &str = "demo-weather-key-4f9c2a";
const PRICE_USDC: &str = "0.01";

fn step(n: u32, text: &str) {
    println!("[{n}/7] {text}");
}

fn usdc(atomic: U256) -> String {
    let v = u128::try_from(atomic).unwrap_or(u128::MAX);
    format!("{}.{:06}", v / 1_000_000, v % 1_000_000)
}

/// The demo upstream: a weather API that refuses calls without its key.
async fn weather_api() -> anyhow::Result<MockUpstream> {
    let text = |status: u16, body: &str| Reply::body(status, "text/plain; charset=utf-8", body.to_owned());
    MockUpstream::answering(Reply::with(move |req| {
        if req.header("authorization") != Some(format!("Bearer {API_KEY}")) {
            return text(401, "missing API key");
        }
        if req.path() == "/broken" {
            return text(500, "weather station offline");
        }
        let city = req.path().rsplit('/').next().unwrap_or("?").to_owned();
        Reply::json(200, &serde_json::json!({ "city": city, "temp_c": 18, "sky": "clear" }))
    }))
    .await
}

fn config(db_url: &str, rpc: &str, upstream: &str, pay_to: Address) -> ConfigBuilder {
    ConfigBuilder::new()
        .admin_listen()
        .database(db_url)
        .relayer_env("DEMO_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 20u64)
        .set("settlement", "recovery_interval_ms", 200u64)
        .network(NetworkConfig::base(rpc))
        .provider(
            ProviderConfig::new("weather", pay_to, upstream)
                .credential_header("DEMO_WEATHER_KEY")
                .route(RouteConfig::priced("/weather/{city}", PRICE_USDC).description("Current weather for a city"))
                .route(RouteConfig::priced("/broken", PRICE_USDC)),
        )
        .provider(
            ProviderConfig::new("weather-bulk", pay_to, upstream)
                .strip_prefix("/bulk")
                .credential_header("DEMO_WEATHER_KEY")
                .route(
                    RouteConfig::priced("/bulk/weather/{city}", PRICE_USDC)
                        .settlement("deferred")
                        .description("Weather, settled in the background"),
                ),
        )
}

struct Row {
    call: String,
    status: String,
    charged: String,
    tx: String,
    outcome: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    step(1, "starting anvil as Base (chain 8453), test USDC at the Base USDC address");
    let chain = TestChain::start(Deployment::BaseUsdc).await?;

    step(2, "creating the agent's wallet with 1.00 test USDC");
    let agent = chain.funded_payer(1_000_000).await?;
    let provider_wallet = random_key().address();

    step(3, "starting the demo weather API (requires an API key the agent never sees)");
    let weather = weather_api().await?;
    let upstream = weather.url();

    step(4, "starting the tollgate gateway on embedded SQLite, API key injected at call time");
    let dir = tempfile::tempdir()?;
    let text = config(&sqlite_url(dir.path()), &chain.anvil.url, &upstream, provider_wallet).build();
    let env =
        [("DEMO_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("DEMO_WEATHER_KEY", API_KEY.to_owned())];
    let running = TestGateway::start_paid(&text, &env, Arc::new(SystemClock)).await?;
    let gateway = running.gateway().clone();
    let base = running.url().to_owned();
    println!("      gateway at {base}, relayer {}", gateway.relayer().map(|a| a.to_string()).unwrap_or_default());

    step(5, "agent pays per call (budget 0.04 USDC in all, 0.01 USDC per call)");
    let mut config = ClientConfig::new(agent.clone(), dir.path().join("agent-spend.json"));
    config.limits = SpendLimits {
        max_per_call_atomic: Some(U256::from(10_000u64)),
        total_budget_atomic: Some(U256::from(40_000u64)),
        ..SpendLimits::default()
    };
    let client = PayingClient::new(config)?;
    let calls =
        ["/weather/lisbon", "/weather/nairobi", "/bulk/weather/osaka", "/broken", "/weather/lima", "/weather/oslo"];
    let mut rows = Vec::new();
    for path in calls {
        let url = format!("{base}{path}");
        let row = match client.send(Method::GET, &url, HeaderMap::new(), "").await {
            Ok(paid) => {
                let record = paid.payment.as_ref();
                let state = record
                    .and_then(|r| serde_json::to_value(r.state).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let charged = match (paid.status.is_success(), record) {
                    (true, Some(r)) => format!("{} USDC", usdc(r.amount.0)),
                    _ => "0 (not charged)".to_owned(),
                };
                let tx = paid.receipt.as_ref().map(|r| r.transaction.clone()).filter(|t| !t.is_empty());
                let tx = tx.or_else(|| {
                    paid.headers
                        .get("tollgate-receipt")
                        .map(|id| format!("deferred, receipt {}", id.to_str().unwrap_or("?")))
                });
                Row {
                    call: format!("GET {path}"),
                    status: paid.status.as_u16().to_string(),
                    charged,
                    tx: tx.unwrap_or_else(|| "-".to_owned()),
                    outcome: if paid.status.is_success() {
                        format!("paid, agent record `{state}`")
                    } else {
                        format!("upstream failed, agent record `{state}`, ledger voided")
                    },
                }
            }
            Err(ClientError::BudgetExceeded { .. }) => Row {
                call: format!("GET {path}"),
                status: "-".to_owned(),
                charged: "0".to_owned(),
                tx: "-".to_owned(),
                outcome: "refused by the agent's budget (nothing signed)".to_owned(),
            },
            Err(e) => anyhow::bail!("{path}: {e}"),
        };
        println!("      {:<24} {:>4}  {}", row.call, row.status, row.outcome);
        rows.push(row);
    }

    step(6, "waiting for the deferred settlement and tying the ledger to the chain");
    let query = SpendQuery {
        chain_id: 8453,
        asset: chain.token,
        payer: agent.address(),
        provider: None,
        route: None,
        created_from_unix_s: None,
        created_before_unix_s: None,
    };
    let mut totals = gateway.ledger.spend().totals(&query).await?;
    for _ in 0..200 {
        if totals.pending.count == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        totals = gateway.ledger.spend().totals(&query).await?;
    }
    let entries = gateway.ledger.entries().of_payer(8453, chain.token, agent.address(), 100).await?;
    for row in rows.iter_mut().filter(|r| r.tx.starts_with("deferred")) {
        if let Some(e) = entries.iter().find(|e| row.tx.ends_with(&e.id.to_string())) {
            row.tx = e.tx_hash.map(|t| format!("{t:#x} (settled later)")).unwrap_or_else(|| row.tx.clone());
        }
    }
    let onchain_provider = chain.balance(provider_wallet).await?;
    let agent_after = chain.balance(agent.address()).await?;
    let voided = entries.iter().filter(|e| e.state == EntryState::Voided).count();

    step(7, "summary");
    println!();
    println!("  {:<24} {:>6}  {:<16} {:<70} outcome", "call", "status", "charged", "settlement tx");
    for r in &rows {
        println!("  {:<24} {:>6}  {:<16} {:<70} {}", r.call, r.status, r.charged, r.tx, r.outcome);
    }
    println!();
    println!(
        "  ledger:   {} settled = {} USDC, {} voided (not charged), {} pending",
        totals.settled.count,
        usdc(U256::from(totals.settled.amount)),
        voided,
        totals.pending.count
    );
    println!(
        "  on chain: provider received {} USDC; agent holds {} USDC (started with 1.000000)",
        usdc(onchain_provider),
        usdc(agent_after)
    );
    let agent_spent = U256::from(1_000_000u64) - agent_after;
    let balanced = U256::from(totals.settled.amount) == onchain_provider && agent_spent == onchain_provider;
    println!("  books balance: {}", if balanced { "yes — ledger settled total == on-chain transfers" } else { "NO" });

    running.stop().await;
    drop(chain); // kills anvil
    if !balanced {
        anyhow::bail!("ledger and chain disagree");
    }
    Ok(())
}
