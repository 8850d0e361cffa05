//! The web console in a real browser: `tollgate serve` (the binary) with anvil and paid calls,
//! then `tests/console/console.mjs` drives Debian's headless Chromium through playwright-core
//! against the admin listener's `/console/`, and this test checks what the pages showed
//! against the admin API, the next 402 quote and the next paid call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::providers::Provider;
use alloy::sol_types::SolCall as _;
use serde_json::{Value, json};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, PaymentBuilder, ProviderConfig, Reply, RouteConfig,
    TestChain, anvil_key, random_key, v2_header,
};

use crate::crash::{KEY, PRICE, offer, slow_upstream};

/// A description and a note that would run script if the console wrote them as HTML.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
/// The same within a provider's service name and tags (1 to 32 printable ASCII characters).
const XSS_NAME: &str = "<img src=x onerror=__xss=3>";
const XSS_TAG: &str = "<script>__xss=4</script>";
/// A wallet policy's endpoint names, which the API stores as given in the `*` scope.
const XSS_ENDPOINT: &str = "slow:/<img src=x onerror=__xss=5>";
/// The ledger's states once every seeded call is done, sorted: five settled (four in mode
/// `after`, one deferred) and the call whose upstream failed.
const FINAL_STATES: [&str; 6] = ["settled", "settled", "settled", "settled", "settled", "voided"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

// Goal: in headless Chromium, the operator logs in and the overview counts the paid calls; an
// XSS payload in an endpoint description, a provider's service name and tags, a wallet
// policy's endpoints and a reconciliation note shows as text and runs nothing; a voided call
// (its upstream failed) and a deferred call show on the Ledger page with their states and the
// transitions the admin API recorded; a price changed in the Endpoints page is what the admin
// API lists and what the next 402 quotes; a wallet revoked in the Wallets page is refused on
// its next call; the Finance page's CSV download is byte for byte the admin API's CSV of the
// same range; a provider token sees only its own provider; no page logs a console error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install -y chromium` (scripts/test.sh does it when missing)"
    );
    let script = repo_root().join("tests/console/console.mjs");
    assert!(
        repo_root().join("tests/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: `npm ci --prefix tests` (scripts/test.sh does it)"
    );

    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let upstream = slow_upstream().await;
    // The upstream of `shop`, a provider created through the admin API: it always fails, so
    // its paid call is voided and nothing is charged.
    let failing = MockUpstream::answering(Reply::text(500, "upstream broke")).await.unwrap().detach();
    let payee = random_key().address();
    let other_payee = random_key().address();
    let payer = random_key();
    let revoked = random_key();
    chain.mint(payer.address(), 1_000_000).await.unwrap();
    chain.mint(revoked.address(), 1_000_000).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let config = dir.path().join("tollgate.toml");
    ConfigBuilder::new()
        .admin_listen()
        .allow_loopback_upstreams()
        .database(&db_url)
        .relayer_env("CONSOLE_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 20u64)
        .network(NetworkConfig::base(&chain.anvil.url))
        .provider(
            ProviderConfig::new("slow", payee, &upstream)
                .credential_header("CONSOLE_API_KEY")
                .route(RouteConfig::new("/after/{x}", PRICE).description(XSS)),
        )
        .provider(
            ProviderConfig::new("other", other_payee, &upstream)
                .credential_header("CONSOLE_API_KEY")
                .route(RouteConfig::new("/other/{x}", PRICE))
                .route(RouteConfig::new("/deferred/{x}", PRICE).settlement("deferred")),
        )
        .write(&config)
        .unwrap();
    let relayer = format!("{:#x}", anvil_key(9).to_bytes());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["admin", "bootstrap", "--config", config.to_str().unwrap(), "--label", "console"])
        .env("CONSOLE_RELAYER_KEY", &relayer)
        .env("CONSOLE_API_KEY", KEY)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let operator = serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"].as_str().unwrap().to_owned();
    let env = [("CONSOLE_RELAYER_KEY", relayer.clone()), ("CONSOLE_API_KEY", KEY.to_owned())];
    let served = crate::serve::spawn_serve_with_admin(&config, &env, Default::default()).await;
    let (url, admin_url) = (served.url.clone(), served.admin_url.clone().expect("admin API line"));

    let http = tollgate_test_support::http();
    let post = reqwest::Method::POST;
    let mut tokens = json!({ "operator": operator });
    for (role, provider) in [("provider", Some("slow")), ("finance", None)] {
        let created = admin(
            &http,
            &admin_url,
            &operator,
            post.clone(),
            "/admin/tokens",
            Some(json!({"role": role, "provider": provider})),
        )
        .await;
        tokens[role] = created["token"].clone();
    }

    // Provider `shop` through the admin API, its service fields and an endpoint description
    // carrying the payloads; a wallet policy whose endpoint names carry one too.
    let put = reqwest::Method::PUT;
    admin(
        &http,
        &admin_url,
        &operator,
        put.clone(),
        "/admin/providers/shop",
        Some(json!({"pay_to": format!("{:#x}", random_key().address()), "upstream": failing,
            "service_name": XSS_NAME, "tags": [XSS_TAG, "shop"]})),
    )
    .await;
    admin(
        &http,
        &admin_url,
        &operator,
        put.clone(),
        "/admin/providers/shop/endpoints",
        Some(json!({"path": "/fail/{x}", "price": "0.001", "description": XSS})),
    )
    .await;
    let listed_wallet = random_key().address();
    admin(
        &http,
        &admin_url,
        &operator,
        put,
        &format!("/admin/wallets/{listed_wallet:#x}?scope=*"),
        Some(json!({"endpoints": ["slow:/after/{x}", XSS_ENDPOINT]})),
    )
    .await;

    // Three paid calls to `slow`, one to `other`; each settles before the answer (mode after).
    let now = chain.latest_timestamp().await.unwrap();
    let accepted = offer(&http, &format!("{url}/after/x")).await;
    for i in 0..3 {
        let header = v2_header(&PaymentBuilder::new(&accepted, &payer, now));
        let resp = http.get(format!("{url}/after/{i}")).header("payment-signature", header).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let other = offer(&http, &format!("{url}/other/x")).await;
    let resp = http
        .get(format!("{url}/other/1"))
        .header("payment-signature", v2_header(&PaymentBuilder::new(&other, &payer, now)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A deferred call to `other` (answered first, settled by the worker) and a call to `shop`
    // whose upstream fails (voided: the agent gets the upstream's 500, nothing is charged).
    let deferred = offer(&http, &format!("{url}/deferred/x")).await;
    let resp = http
        .get(format!("{url}/deferred/1"))
        .header("payment-signature", v2_header(&PaymentBuilder::new(&deferred, &payer, now)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["tollgate-settlement"], "deferred");
    let shop = offer(&http, &format!("{url}/fail/x")).await;
    let resp = http
        .get(format!("{url}/fail/1"))
        .header("payment-signature", v2_header(&PaymentBuilder::new(&shop, &payer, now)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    // Settlement of mode `after` may finish just after the answer, and the deferred one later:
    // wait until the ledger says five settled and one voided (bounded), so the overview's
    // counts are the final ones.
    let mut states = Vec::new();
    for _ in 0..600 {
        let page = admin(&http, &admin_url, &operator, reqwest::Method::GET, "/admin/ledger/entries", None).await;
        states = page["entries"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap().to_owned()).collect();
        states.sort();
        if states == FINAL_STATES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(states, FINAL_STATES, "the calls end settled or voided");
    // A plain transfer to the payee: the reconciliation's exception the finance page annotates.
    chain.fund_gas(payer.address()).await.unwrap();
    let plain = tollgate_test_support::TokenCall::transferCall { to: payee, value: alloy_primitives::U256::from(7u64) };
    chain.send_as(payer.clone(), chain.token, plain.abi_encode()).await.unwrap();
    let head = chain.provider.get_block_number().await.unwrap();

    let out_dir = std::env::var("CONSOLE_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let spec = json!({
        "admin_url": admin_url,
        "tokens": tokens,
        "xss": XSS,
        "xss_name": XSS_NAME,
        "deferred_route": "other:/deferred/{x}",
        "price": {"path": "/after/{x}", "value": "0.002"},
        "wallet": format!("{:#x}", revoked.address()),
        "head_block": head,
        "out_dir": out_dir,
    });
    let spec_file = dir.path().join("console-spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let started = std::time::Instant::now();
    let node = tokio::process::Command::new("node")
        .arg(&script)
        .env("CONSOLE_SPEC", &spec_file)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), node).await.expect("the browser script finished").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node: {stderr}");
    let seen: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("browser script: {:.1} s; screenshots in {}", started.elapsed().as_secs_f64(), out_dir.display());
    assert!(seen.get("failure").is_none(), "the browser script failed: {seen:#}");

    // Login and the overview: six paid calls (entries), five settled and one voided.
    let op = &seen["operator"];
    assert_eq!(op["nav"], json!(["Overview", "Ledger & audit", "Endpoints", "Wallets", "Finance"]), "{seen:#}");
    assert_eq!((op["paid_calls"].as_str(), op["settled"].as_str()), (Some("6"), Some("5")), "{seen:#}");
    assert_eq!(op["voided_count"], "1", "{seen:#}");
    // The payloads are text: shown verbatim, no element made of them, no script run.
    let descriptions = op["descriptions"].as_array().unwrap();
    assert_eq!(descriptions.iter().filter(|d| *d == XSS).count(), 2, "config and admin API: {seen:#}");
    assert_eq!(op["images_in_descriptions"], 0);
    assert_eq!(op["endpoints_stray_texts"], 0, "no \"null\" where a provider has no service fields");
    assert_eq!(op["service_names"], json!([XSS_NAME]), "{seen:#}");
    assert_eq!(op["tags"], json!([XSS_TAG, "shop"]), "{seen:#}");
    assert!(op["wallet_endpoints"].as_array().unwrap().iter().any(|e| e == XSS_ENDPOINT), "{seen:#}");
    assert_eq!(op["elements_in_service_and_wallets"], 0, "{seen:#}");
    assert_eq!(seen["finance"]["notes"], json!([XSS]), "{seen:#}");
    assert_eq!(seen["finance"]["elements_in_notes"], 0);
    assert_eq!(seen["xss_fired"], false);
    // The ledger page lists the entries and one entry's history ends settled.
    assert_eq!(op["entry_rows"], 6, "{seen:#}");
    assert_eq!(op["event_states"].as_array().unwrap().last().unwrap(), "settled", "{seen:#}");
    assert!(op["audit_rows"].as_u64().unwrap() >= 6, "{seen:#}");
    // The voided and the deferred entry: found by their filters, with their state, mode and
    // the transitions the admin API recorded for them, in order.
    for (which, state, mode) in [("voided", "voided", "after"), ("deferred", "settled", "deferred")] {
        let shown = &op[which];
        assert_eq!(shown["row_states"], json!([state]), "{which}: {seen:#}");
        assert_eq!((shown["state"].as_str(), shown["mode"].as_str()), (Some(state), Some(mode)), "{which}: {seen:#}");
        let id = shown["entry_id"].as_str().unwrap();
        let events = admin(
            &http,
            &admin_url,
            &operator,
            reqwest::Method::GET,
            &format!("/admin/ledger/entries/{id}/events"),
            None,
        )
        .await;
        let recorded: Vec<&Value> = events["events"].as_array().unwrap().iter().map(|e| &e["to_state"]).collect();
        assert_eq!(json!(recorded), shown["event_states"], "{which}: {seen:#}");
        assert_eq!(recorded.last().map(|s| s.as_str()), Some(Some(state)), "{which}: {events:#}");
        assert_eq!(recorded.first().map(|s| s.as_str()), Some(Some("reserved")), "{which}: {events:#}");
    }
    // The deferred entry was answered before it settled: forwarded, then settled by the worker.
    let deferred_states = op["deferred"]["event_states"].as_array().unwrap();
    let forwarded = deferred_states.iter().position(|s| s == "forwarded");
    assert!(forwarded.is_some_and(|i| i + 1 < deferred_states.len()), "{seen:#}");
    assert!(!op["voided"]["event_states"].as_array().unwrap().iter().any(|s| s == "settled"), "{seen:#}");
    // Why it was voided, as the page shows it: the upstream's 5xx.
    assert_eq!(op["voided"]["event_causes"].as_array().unwrap().last().unwrap(), "upstream_5xx", "{seen:#}");

    // The price set in the page is the admin API's current price and the next quote's amount.
    let listed =
        admin(&http, &admin_url, &operator, reqwest::Method::GET, "/admin/providers/slow/endpoints", None).await;
    let endpoint = &listed["endpoints"][0];
    assert_eq!(endpoint["prices"][0]["amount"], "2000", "{listed:#}");
    assert!(
        op["price_set"].as_str().unwrap().contains(&format!("price version {}", endpoint["price_version"])),
        "{seen:#}"
    );
    assert_eq!(json!(offer(&http, &format!("{url}/after/x")).await.amount), json!("2000"));

    // The wallet revoked in the page is refused on its next call, before anything is charged.
    assert!(op["revoked_wallets"].as_array().unwrap().iter().any(|w| w == &json!(format!("{:#x}", revoked.address()))));
    let fresh = offer(&http, &format!("{url}/after/x")).await;
    let resp = http
        .get(format!("{url}/after/9"))
        .header("payment-signature", v2_header(&PaymentBuilder::new(&fresh, &revoked, now)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("wallet_revoked"));

    // Finance: its pages, one recorded run; the provider: only its own provider.
    assert_eq!(seen["finance"]["nav"], json!(["Overview", "Ledger & audit", "Finance"]), "{seen:#}");
    assert_eq!(seen["finance"]["runs"], 1);
    // The CSV the page downloaded is the admin API's CSV of the same range, byte for byte:
    // the same columns and the same rows (the API call records a run too; it is compared
    // after the browser is done).
    let finance = tokens["finance"].as_str().unwrap();
    let api_csv = http
        .post(format!("{admin_url}/admin/reconcile?format=csv"))
        .bearer_auth(finance)
        .json(&json!({"from_block": 0, "to_block": head, "confirmations": 1}))
        .send()
        .await
        .unwrap();
    assert!(api_csv.status().is_success());
    let api_csv = api_csv.text().await.unwrap();
    assert_eq!(seen["finance"]["csv_name"], "reconciliation.csv", "{seen:#}");
    let browser_csv = seen["finance"]["csv"].as_str().unwrap();
    let rows = |text: &str| text.split("\r\n").filter(|l| !l.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    let (browser_rows, api_rows) = (rows(browser_csv), rows(&api_csv));
    assert_eq!(browser_rows.first(), api_rows.first(), "same columns");
    assert!(api_rows.len() >= 7, "a header, six transfers to payees (five settlements, one plain): {api_csv}");
    assert_eq!(browser_rows, api_rows);
    assert_eq!(browser_csv, api_csv, "byte for byte");
    let prov = &seen["provider"];
    assert_eq!(prov["nav"], json!(["Overview", "Ledger & audit", "Endpoints", "Wallets"]), "{seen:#}");
    assert_eq!(prov["paid_calls"], "3", "{seen:#}");
    assert_eq!(prov["sections"], json!(["slow"]), "{seen:#}");
    let routes = prov["entry_routes"].as_array().unwrap();
    assert!(routes.len() == 3 && routes.iter().all(|r| r == "slow:/after/{x}"), "{seen:#}");

    assert_eq!(seen["console_errors"], json!([]), "{seen:#}");
    for page in ["overview", "endpoints", "ledger", "audit", "wallets", "finance", "provider-ledger"] {
        assert!(out_dir.join(format!("{page}.png")).is_file(), "{page} screenshot");
    }
}
