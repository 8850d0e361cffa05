//! Fault-matrix scenarios (issue 14): the real `tollgate` binary against real anvil behind the
//! JSON-RPC fault proxy, a scripted upstream and, after recovery, the truth rule — what the
//! agent was told must match what the ledger and the chain say happened.
//!
//! Each scenario is self-contained: it writes its own config, starts its own chain, proxy,
//! upstream and gateway, and joins the answer with the ledger and the chain by (payer,
//! nonce).

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use tollgate_metering::{Entry, EntryState, Ledger, LedgerOptions};
use tollgate_test_support::{
    Deployment, GatewayProcess, PaymentBuilder, RpcFault, RpcFaultProxy, ScriptedUpstream, TestChain, anvil_key,
    random_key, v2_header,
};
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header, v2};

const UPSTREAM_KEY: &str = "sk-faults-upstream-credential";
const PRICE: u64 = 1_000;
const MINTED: u64 = 1_000_000;
const RECOVERY_INTERVAL_MS: u64 = 200;
const RECOVERY_GRACE_S: u64 = 1;

/// What the agent was told about its money.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    /// A 2xx, or a receipt naming a transaction (`success`, or `settlement_pending` with a
    /// hash): the agent must assume it paid, and must have been charged exactly once.
    Charged { status: u16, tx: B256 },
    /// Anything else (402, 5xx, no transaction in the receipt): the agent may pay again, so
    /// nothing may ever move.
    NotCharged { status: u16, reason: Option<String> },
}

fn write_config(path: &Path, db_url: &str, rpc_url: &str, upstream: &str, payee: Address) {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[database]
url = "{db_url}"

[settlement]
relayer_key_env = "FAULTS_RELAYER_KEY"
receipt_poll_interval_ms = 20
receipt_timeout_ms = 10000
deferred_receipt_poll_interval_ms = 50
recovery_interval_ms = {RECOVERY_INTERVAL_MS}
recovery_grace_s = {RECOVERY_GRACE_S}

[[networks]]
id = "eip155:8453"
rpc_url = "{rpc_url}"
rpc_timeout_ms = 2000
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "faults"
pay_to = "{payee:#x}"
upstream = "{upstream}"
credential = {{ inject = "header", secret_env = "FAULTS_API_KEY" }}

[[providers.routes]]
path = "/after/{{x}}"
price_atomic = "{PRICE}"
"#
    );
    std::fs::write(path, text).unwrap();
}

async fn offer(http: &reqwest::Client, url: &str) -> v2::PaymentRequirements {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 402, "unpaid call must be challenged");
    let raw = resp.headers()["payment-required"].as_bytes().to_vec();
    let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX).unwrap();
    challenge.accepts[0].clone()
}

/// Reads what the response told the agent about its payment.
fn told(resp: &reqwest::Response) -> Told {
    let status = resp.status().as_u16();
    let receipt: Option<SettleResponse> =
        resp.headers().get("payment-response").and_then(|v| decode_header(v.as_bytes(), PAYMENT_HEADER_BYTES_MAX).ok());
    let tx = receipt.as_ref().and_then(|r| r.transaction.parse::<B256>().ok());
    let pending = receipt.as_ref().is_some_and(|r| r.error_reason.as_deref() == Some("settlement_pending"));
    match tx {
        Some(tx) if (200..300).contains(&status) || receipt.as_ref().is_some_and(|r| r.success) || pending => {
            Told::Charged { status, tx }
        }
        // A 2xx without a transaction would be a free delivery: still "charged" as far as the
        // agent can tell, with nothing to check — the join below catches it.
        None if (200..300).contains(&status) => Told::Charged { status, tx: B256::ZERO },
        _ => Told::NotCharged { status, reason: receipt.and_then(|r| r.error_reason) },
    }
}

/// One paid call and what its agent was told.
struct Call {
    payer: PrivateKeySigner,
    nonce: B256,
    told: Told,
}

/// Makes one paid call on `url` for `payer`.
async fn pay(
    http: &reqwest::Client,
    chain: &TestChain,
    url: &str,
    offer: &v2::PaymentRequirements,
    payer: &PrivateKeySigner,
) -> Call {
    let payment = PaymentBuilder::new(offer, payer, chain.latest_timestamp().await.unwrap());
    let resp = http.get(url).header("payment-signature", v2_header(&payment)).send().await.unwrap();
    let told = told(&resp);
    let body = resp.text().await.unwrap_or_default();
    eprintln!("payer {} told {told:?}; body {body}", payer.address());
    Call { payer: payer.clone(), nonce: payment.nonce, told }
}

/// Waits until every entry of `calls` is terminal, or `within` passed.
async fn wait_terminal(ledger: &Ledger, token: Address, calls: &[Call], within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut all = true;
        for c in calls {
            let entries = ledger.entries_of_payer(8453, token, c.payer.address(), 100).await.unwrap();
            all &= !entries.is_empty() && entries.iter().all(|e| e.state.is_terminal());
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The truth rule for one call, joined by (payer, nonce) with the ledger and the chain: the
/// violations found, each with the entry's story.
async fn violations(ledger: &Ledger, chain: &TestChain, call: &Call) -> Vec<String> {
    let payer = call.payer.address();
    let entries = ledger.entries_of_payer(8453, chain.token, payer, 100).await.unwrap();
    let Some(entry) = entries.iter().find(|e| e.nonce == call.nonce) else {
        return vec![format!("payer {payer}: no ledger entry for nonce {:#x}", call.nonce)];
    };
    let story = describe(ledger, entry).await;
    let used = chain.authorization_used(payer, call.nonce).await.unwrap();
    let balance = chain.balance(payer).await.unwrap();
    let mut found = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            found.push(format!("payer {payer}: {what}\n    {story}"));
        }
    };
    match &call.told {
        Told::NotCharged { status, reason } => {
            check(
                !used,
                format!("told {status} {reason:?} (\"nothing was charged\"), but the authorization was used on chain"),
            );
            check(balance == U256::from(MINTED), format!("told not charged, but the balance is {balance} of {MINTED}"));
            check(entry.state != EntryState::Settled, "told not charged, but the ledger says settled".to_owned());
        }
        Told::Charged { status, tx } => {
            check(entry.state == EntryState::Settled, format!("told {status} with tx {tx:#x}, but not settled"));
            check(used, format!("told {status} with tx {tx:#x}, but the authorization is unused"));
            check(
                balance == U256::from(MINTED - PRICE),
                format!("charged once means {}, balance is {balance}", MINTED - PRICE),
            );
            let recorded = ledger.events(&entry.id).await.unwrap().iter().filter_map(|e| e.tx_hash).collect::<Vec<_>>();
            check(recorded.contains(tx), format!("the hash the agent was given ({tx:#x}) is none of the entry's"));
        }
    }
    check(entries.len() == 1, format!("{} entries for one authorization", entries.len()));
    check(entry.state.is_terminal(), format!("entry left {:?} after recovery", entry.state));
    found
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn describe(ledger: &Ledger, entry: &Entry) -> String {
    let events = ledger.events(&entry.id).await.unwrap();
    let trail: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{:?}→{:?} ({}{})",
                e.from_state,
                e.to_state,
                e.cause,
                e.tx_hash.map(|t| format!(" {t:#x}")).unwrap_or_default()
            )
        })
        .collect();
    format!("entry {} now {:?} (reason {:?}); events: {}", entry.id, entry.state, entry.reason, trail.join(", "))
}

// Goal: the node refuses the settlement broadcast (HTTP 503 on eth_sendRawTransaction) for
// one paid call on an `after` route; the node then recovers and serves another payer's call
// (so the relayer's nonce moves on, as under any load); once recovery has run, what each
// agent was told holds — "not charged" means the authorization is unused and the balance
// unchanged, a transaction hash means settled and charged exactly once — and every entry is
// terminal (SQLite, real binary, real anvil).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_refused_after_claim_sqlite() {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let proxy = RpcFaultProxy::start(&chain.anvil.url).await.unwrap();
    let upstream = ScriptedUpstream::start().await.unwrap();
    let payee = random_key().address();
    let (faulted, bystander) = (random_key(), random_key());
    chain.mint(faulted.address(), MINTED).await.unwrap();
    chain.mint(bystander.address(), MINTED).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let config = dir.path().join("tollgate.toml");
    write_config(&config, &db_url, &proxy.url(), &upstream.url(), payee);
    let relayer_key = format!("{:#x}", anvil_key(9).to_bytes());
    let env = [("FAULTS_RELAYER_KEY", relayer_key.clone()), ("FAULTS_API_KEY", UPSTREAM_KEY.to_owned())];
    let mut gw =
        GatewayProcess::spawn(env!("CARGO_BIN_EXE_tollgate"), &config, &env, dir.path().join("logs")).await.unwrap();

    let http = tollgate_test_support::http();
    let url = format!("{}/after/x", gw.url());
    let offer = offer(&http, &url).await;

    // The node refuses every broadcast during the first call, then is healthy again.
    proxy.set("eth_sendRawTransaction", RpcFault::Status(503));
    let first = pay(&http, &chain, &url, &offer, &faulted).await;
    proxy.pass_all();
    let during_fault = proxy.call_counts();
    proxy.reset_counts();
    assert!(during_fault.get("eth_sendRawTransaction").is_some_and(|n| *n >= 1), "the fault was exercised");
    let second = pay(&http, &chain, &url, &offer, &bystander).await;
    assert_eq!(upstream.hits("/after/x"), 2, "the upstream answered each paid call once");

    // Past the grace period, several sweeps with a healthy node.
    let calls = [first, second];
    let ledger = Ledger::connect(&db_url, LedgerOptions::default()).await.unwrap();
    wait_terminal(&ledger, chain.token, &calls, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(RECOVERY_GRACE_S * 1000 + 5 * RECOVERY_INTERVAL_MS)).await;

    let mut found = Vec::new();
    for call in &calls {
        found.extend(violations(&ledger, &chain, call).await);
    }
    let charged = calls.iter().filter(|c| matches!(c.told, Told::Charged { .. })).count() as u64;
    let payee_balance = chain.balance(payee).await.unwrap();
    if payee_balance != U256::from(charged * PRICE) {
        found.push(format!("the payee holds {payee_balance}, the agents were told of {charged} payment(s) of {PRICE}"));
    }
    gw.kill9().await.unwrap();
    ledger.close().await;
    for secret in [UPSTREAM_KEY, relayer_key.trim_start_matches("0x")] {
        let hits = gw.find_secret(secret);
        if !hits.is_empty() {
            found.push(format!("a secret reached the gateway's output at {hits:?}"));
        }
    }
    assert!(
        found.is_empty(),
        "truth rule violated:\n- {}\nRPC calls during the fault: {during_fault:?}; after it: {:?}\n--- gateway output (tail) ---\n{}",
        found.join("\n- "),
        proxy.call_counts(),
        tail(&gw.logs(), 40)
    );
}
