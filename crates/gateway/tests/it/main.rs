//! End-to-end tests of the gateway: a real anvil chain with the token at Base's USDC
//! address, a real HTTP upstream that requires the injected key, the gateway on a free
//! loopback port, and the ledger on SQLite and PostgreSQL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod after;
mod concurrency;
mod control;
mod deferred_before;
mod errors;
mod hostile_upstream;
mod money_truth;
mod ops;
mod readiness;
mod reconcile;
mod secrets;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tollgate_gateway::{Config, Gateway};
use tollgate_metering::{Entry, EntryState, Role};
use tollgate_test_support::{Deployment, PaymentBuilder, PgDatabase, TestChain, anvil_key, random_key};
use tollgate_verifier::FixedClock;
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header, v2};

pub const API_KEY: &str = "sk-upstream-7f3a9c1e5b2d4f6a8c0e";
pub const PRICE_ATOMIC: u64 = 1_000;
/// The vault's master key in tests (64 hex digits).
pub const VAULT_KEY: &str = "4f1c2e7a9b3d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A real HTTP upstream that demands `Authorization: Bearer API_KEY`.
#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

async fn upstream_handler(State(up): State<Upstream>, req: Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    // Vault-served routes: any key is accepted; the tests read what was injected.
    if path.starts_with("/anykey/") {
        return (StatusCode::OK, "served").into_response();
    }
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
    let query = parts.uri.query().unwrap_or_default();
    let authorized = if path.starts_with("/q/") {
        // Query injection: exactly one api_key, ours.
        query.split('&').filter(|p| p.starts_with("api_key=")).collect::<Vec<_>>() == vec![format!("api_key={API_KEY}")]
    } else if path == "/basic" {
        use base64::Engine as _;
        auth == Some(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("svc:{API_KEY}"))))
    } else {
        auth == Some(&format!("Bearer {API_KEY}"))
    };
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    match path.as_str() {
        p if p.starts_with("/weather/") => {
            let city = p.trim_start_matches("/weather/");
            axum::Json(serde_json::json!({ "city": city, "temp_c": 21 })).into_response()
        }
        "/echo" | "/basic" => (StatusCode::OK, body).into_response(),
        p if p.starts_with("/q/") => (StatusCode::OK, "query ok").into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "/missing" => (StatusCode::NOT_FOUND, "no such thing").into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late".into_response()
        }
        "/slowok" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "slow but fine".into_response()
        }
        "/redirect" => (StatusCode::FOUND, [("location", "http://127.0.0.1:9/elsewhere")]).into_response(),
        _ => (StatusCode::NOT_FOUND, "unknown upstream path").into_response(),
    }
}

impl Upstream {
    /// Starts on a free port; returns its base URL.
    pub async fn start() -> (Upstream, String) {
        let up = Upstream::default();
        let app = axum::Router::new().fallback(upstream_handler).with_state(up.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (up, url)
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw a request")
    }
}

/// Which ledger engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A running gateway with its chain, upstream and ledger.
pub struct Harness {
    pub chain: TestChain,
    pub upstream: Upstream,
    pub gateway: Arc<Gateway>,
    pub url: String,
    pub http: reqwest::Client,
    pub payer: PrivateKeySigner,
    pub payee: Address,
    pub clock: Arc<FixedClock>,
    pub now: u64,
    /// The admin API of this gateway.
    pub admin_url: String,
    /// An operator token (created directly in the database, as `tollgate admin bootstrap` does).
    pub operator: String,
    config_text: String,
    /// The ledger database's URL (tests inject faults into it with SQL).
    pub db_url: String,
    env: HashMap<&'static str, String>,
    _db_dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Extra knobs for a harness.
#[derive(Debug, Clone)]
pub struct Options {
    /// `settlement.receipt_timeout_ms`.
    pub receipt_timeout_ms: u64,
    /// TOML appended to the configuration (e.g. a `[reconciliation]` section).
    pub extra_config: String,
    /// TOML lines added to the `[settlement]` table.
    pub settlement_config: String,
    /// `settlement.health_interval_ms`. An hour by default: the readiness monitor then checks
    /// once at startup, so tests that drain the relayer to see the node refuse a broadcast
    /// are not raced by the monitor refusing first.
    pub health_interval_ms: u64,
    /// TOML lines added to the `[server]` table.
    pub server_config: String,
    /// The providers' upstream instead of the harness's own (e.g. a TLS `ScriptedUpstream`).
    pub upstream_url: Option<String>,
    /// The network's `rpc_url` instead of anvil's (e.g. a TLS proxy in front of it).
    pub rpc_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            receipt_timeout_ms: 10_000,
            extra_config: String::new(),
            settlement_config: String::new(),
            health_interval_ms: 3_600_000,
            server_config: String::new(),
            upstream_url: None,
            rpc_url: None,
        }
    }
}

impl Harness {
    /// Starts everything, or returns `None` for Postgres when it is skipped.
    pub async fn start(engine: Engine) -> Option<Harness> {
        Self::start_with(engine, Options::default()).await
    }

    pub async fn start_with(engine: Engine, opts: Options) -> Option<Harness> {
        let (db_url, db_dir, pg) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
                (url, Some(dir), None)
            }
            Engine::Postgres => {
                let db = PgDatabase::create("gateway").await?;
                (db.url.clone(), None, Some(db))
            }
        };
        let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
        let (upstream, upstream_url) = Upstream::start().await;
        let payee = random_key().address();
        let relayer = anvil_key(9);
        let upstream_url = opts.upstream_url.clone().unwrap_or(upstream_url);
        let rpc_url = opts.rpc_url.clone().unwrap_or(chain.anvil.url.clone());
        let text = config_text(&db_url, &rpc_url, &upstream_url, payee, &opts) + &opts.extra_config;
        let db_url = db_url.clone();
        let env: HashMap<&'static str, String> = HashMap::from([
            ("TEST_RELAYER_KEY", format!("{:#x}", relayer.to_bytes())),
            ("TEST_API_KEY", API_KEY.to_owned()),
            ("TEST_VAULT_KEY", VAULT_KEY.to_owned()),
        ]);
        let config = Config::parse(&text, &|k| env.get(k).cloned()).expect("config");
        let now = chain.latest_timestamp().await.unwrap();
        let clock = Arc::new(FixedClock::new(now));
        let gateway = Gateway::start(config, clock.clone()).await.expect("gateway starts");
        let (url, tx) = serve_on_free_port(gateway.clone()).await;
        let admin_url = serve_admin_on_free_port(gateway.clone()).await;
        let operator = admin_token(&gateway, Role::Operator, None).await;
        let payer = random_key();
        chain.mint(payer.address(), 1_000_000).await.unwrap();
        Some(Harness {
            chain,
            upstream,
            gateway,
            url,
            http: tollgate_test_support::http_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            payer,
            payee,
            clock,
            now,
            admin_url,
            operator,
            config_text: text,
            db_url,
            env,
            _db_dir: db_dir,
            pg,
            shutdown: Some(tx),
        })
    }

    /// Another gateway process on the same configuration and database (a replica), serving
    /// on its own port until the returned sender is dropped.
    pub async fn start_replica(&self) -> (Arc<Gateway>, String, tokio::sync::oneshot::Sender<()>) {
        let config = Config::parse(&self.config_text, &|k| self.env.get(k).cloned()).expect("config");
        let gateway = Gateway::start(config, self.clock.clone()).await.expect("replica starts");
        let (url, tx) = serve_on_free_port(gateway.clone()).await;
        (gateway, url, tx)
    }

    /// A replica with its admin API: (gateway, url, admin url, stop sender).
    pub async fn start_replica_with_admin(&self) -> (Arc<Gateway>, String, String, tokio::sync::oneshot::Sender<()>) {
        let (gw, url, tx) = self.start_replica().await;
        let admin = serve_admin_on_free_port(gw.clone()).await;
        (gw, url, admin, tx)
    }

    /// The configuration text this harness started with.
    pub fn config_text_for_test(&self) -> String {
        self.config_text.clone()
    }

    /// Calls the admin API: (status, JSON body or Null).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        admin_call(&self.http, &self.admin_url, method, path, token, body).await
    }

    /// Stops the server and drops the Postgres database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.gateway.ledger.close().await;
        if let Some(pg) = self.pg.take() {
            pg.drop_now().await;
        }
    }

    /// The offer the gateway makes for `GET path` (from a real 402).
    pub async fn offer(&self, path: &str) -> v2::PaymentRequirements {
        self.offer_for(reqwest::Method::GET, path).await
    }

    /// The offer the gateway makes for `method path` (from a real 402).
    pub async fn offer_for(&self, method: reqwest::Method, path: &str) -> v2::PaymentRequirements {
        let resp = self.http.request(method, format!("{}{path}", self.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let header = resp.headers().get("payment-required").expect("v2 challenge header").as_bytes().to_vec();
        let challenge: v2::PaymentRequired = decode_header(&header, PAYMENT_HEADER_BYTES_MAX).unwrap();
        challenge.accepts.into_iter().next().expect("an offer")
    }

    /// A valid payment for `path` by the funded payer.
    pub async fn payment(&self, path: &str) -> PaymentBuilder {
        PaymentBuilder::new(&self.offer(path).await, &self.payer, self.now)
    }

    /// A valid payment for `POST path`.
    pub async fn payment_post(&self, path: &str) -> PaymentBuilder {
        PaymentBuilder::new(&self.offer_for(reqwest::Method::POST, path).await, &self.payer, self.now)
    }

    /// Sends a raw `GET path` (no URL normalisation by a client library) and returns the
    /// status code and body.
    pub async fn raw_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, out)
    }

    pub async fn payee_balance(&self) -> U256 {
        self.chain.balance(self.payee).await.unwrap()
    }

    pub async fn entry_for(&self, b: &PaymentBuilder) -> Option<Entry> {
        self.gateway.ledger.entries().by_authorization(8453, self.chain.token, b.from, b.nonce).await.unwrap()
    }

    /// Runs SQL statements on the ledger database through a connection of its own (fault
    /// injection: triggers that make chosen ledger writes fail, as a failing database does).
    pub async fn exec_sql(&self, statements: &[&str]) {
        use sqlx::Connection as _;
        if self.db_url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(&self.db_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        } else {
            let mut c = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Makes every ledger write that moves an entry into one of `states` fail, until
    /// [`Harness::heal_ledger`]: the database refuses them as a broken one would.
    pub async fn fail_ledger_writes_to(&self, states: &[&str]) {
        let list = states.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(",");
        if self.db_url.starts_with("sqlite") {
            let sql = format!(
                "CREATE TRIGGER fault_injection BEFORE UPDATE OF state ON ledger_entries \
                 WHEN NEW.state IN ({list}) BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            );
            self.exec_sql(&[&sql]).await;
        } else {
            let func = format!(
                "CREATE FUNCTION fault_injection() RETURNS trigger AS $$ BEGIN \
                 IF NEW.state IN ({list}) THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ \
                 LANGUAGE plpgsql"
            );
            let trig = "CREATE TRIGGER fault_injection BEFORE UPDATE ON ledger_entries FOR EACH ROW \
                        EXECUTE FUNCTION fault_injection()";
            self.exec_sql(&[&func, trig]).await;
        }
    }

    /// Removes the fault injected by [`Harness::fail_ledger_writes_to`].
    pub async fn heal_ledger(&self) {
        if self.db_url.starts_with("sqlite") {
            self.exec_sql(&["DROP TRIGGER fault_injection"]).await;
        } else {
            self.exec_sql(&["DROP TRIGGER fault_injection ON ledger_entries", "DROP FUNCTION fault_injection()"]).await;
        }
    }

    /// Polls the ledger until the entry for `b` is in `state` (bounded).
    pub async fn wait_state(&self, b: &PaymentBuilder, state: EntryState) -> Entry {
        for _ in 0..500 {
            if let Some(e) = self.entry_for(b).await
                && e.state == state
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("entry never reached {state:?}: {:?}", self.entry_for(b).await);
    }
}

async fn serve_on_free_port(gateway: Arc<Gateway>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if gateway.config.server.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tollgate_gateway::serve(listener, gateway, async move {
            let _ = rx.await;
        })
        .await
    });
    (url, tx)
}

/// The admin router on a free port, for the life of the test.
pub async fn serve_admin_on_free_port(gateway: Arc<Gateway>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tollgate_gateway::serve_admin(listener, gateway, std::future::pending()));
    url
}

/// A token of `role` made directly in the database.
pub async fn admin_token(gw: &Gateway, role: Role, provider: Option<&str>) -> String {
    let actor = tollgate_metering::Actor("test".to_owned());
    tollgate_gateway::admin::create_token_record(gw, role, provider, "test", &actor).await.unwrap().1
}

pub async fn admin_call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

pub fn receipt_of(resp: &reqwest::Response, header: &str) -> SettleResponse {
    let raw = resp.headers().get(header).unwrap_or_else(|| panic!("no {header} header")).as_bytes().to_vec();
    decode_header(&raw, PAYMENT_HEADER_BYTES_MAX).unwrap()
}

fn config_text(db_url: &str, rpc_url: &str, upstream_url: &str, payee: Address, opts: &Options) -> String {
    let server_config = &opts.server_config;
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gateway.test"
body_bytes_max = 4096
{server_config}

[database]
url = "{db_url}"

# The test upstreams are on loopback, which the SSRF guard refuses unless allowed
# (control::ssrf_* remove this line).
[admin]
upstream_allow = ["127.0.0.1"]

[vault]
master_key_env = "TEST_VAULT_KEY"

[control]
poll_interval_ms = 100

[settlement]
relayer_key_env = "TEST_RELAYER_KEY"
receipt_poll_interval_ms = 5
receipt_timeout_ms = {receipt_timeout_ms}
recovery_interval_ms = 200
recovery_grace_s = 3600
health_interval_ms = {health_interval_ms}
{settlement_config}

[[networks]]
id = "eip155:8453"
rpc_url = "{rpc_url}"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "weather"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
upstream_timeout_ms = 1000
credential = {{ inject = "header", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/weather/{{city}}"
price_atomic = "{PRICE_ATOMIC}"
description = "Weather"

[[providers.routes]]
path = "/echo"
methods = ["POST"]
price_atomic = "{PRICE_ATOMIC}"

[[providers.routes]]
path = "/fail"
price_atomic = "{PRICE_ATOMIC}"

[[providers.routes]]
path = "/missing"
price_atomic = "{PRICE_ATOMIC}"

[[providers.routes]]
path = "/slow"
price_atomic = "{PRICE_ATOMIC}"

[[providers.routes]]
path = "/slowok"
price_atomic = "{PRICE_ATOMIC}"

[[providers.routes]]
path = "/redirect"
price_atomic = "{PRICE_ATOMIC}"

[[providers]]
id = "vaulted"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
strip_prefix = "/vaulted"
credential = {{ inject = "header", vault = "main" }}

[[providers.routes]]
path = "/vaulted/anykey/{{x}}"
price_atomic = "{PRICE_ATOMIC}"

[[providers]]
id = "down"
pay_to = "{payee:#x}"
upstream = "http://127.0.0.1:1"
credential = {{ inject = "header", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/down"
price_atomic = "{PRICE_ATOMIC}"

[[providers]]
id = "via-query"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
strip_prefix = "/viaquery"
credential = {{ inject = "query", param = "api_key", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/viaquery/q/{{x}}"
price_atomic = "{PRICE_ATOMIC}"

[[providers]]
id = "via-basic"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
strip_prefix = "/viabasic"
credential = {{ inject = "basic", username = "svc", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/viabasic/basic"
price_atomic = "{PRICE_ATOMIC}"

[[providers]]
id = "weather-deferred"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
strip_prefix = "/deferred"
credential = {{ inject = "header", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/deferred/weather/{{city}}"
price_atomic = "{PRICE_ATOMIC}"
settlement = "deferred"

[[providers.routes]]
path = "/deferred/fail"
price_atomic = "{PRICE_ATOMIC}"
settlement = "deferred"

[[providers]]
id = "weather-before"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
strip_prefix = "/before"
credential = {{ inject = "header", secret_env = "TEST_API_KEY" }}

[[providers.routes]]
path = "/before/weather/{{city}}"
price_atomic = "{PRICE_ATOMIC}"
settlement = "before"

[[providers.routes]]
path = "/before/fail"
price_atomic = "{PRICE_ATOMIC}"
settlement = "before"
"#,
        receipt_timeout_ms = opts.receipt_timeout_ms,
        health_interval_ms = opts.health_interval_ms,
        settlement_config = opts.settlement_config
    )
}

/// Runs `body` on SQLite and then on PostgreSQL (unless skipped).
#[macro_export]
macro_rules! both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(h) = $crate::Harness::start($crate::Engine::Sqlite).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = $crate::Harness::start($crate::Engine::Postgres).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
        }
    };
}
