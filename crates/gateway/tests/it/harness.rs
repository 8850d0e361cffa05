//! The suite's harness: a real anvil chain with the token at Base's USDC address, the suite's
//! upstream (a [`MockUpstream`] that requires the injected key), the gateway in-process on
//! free loopback ports ([`TestGateway`]) with its configuration from [`ConfigBuilder`], and
//! the ledger on SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use tollgate_gateway::Gateway;
use tollgate_metering::{AtomicAmount, Entry, EntryState, NewEntry, Role, SettlementMode};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, PaymentBuilder, PgDatabase, ProviderConfig, Recorded,
    Reply, RouteConfig, RpcFaultProxy, TestChain, TestGateway, anvil_key, random_key,
};
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
    pub path_and_query: String,
    pub headers: HeaderMap,
}

impl From<Recorded> for Seen {
    fn from(r: Recorded) -> Seen {
        let mut headers = HeaderMap::new();
        for (k, v) in &r.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(k.as_bytes()), axum::http::HeaderValue::from_bytes(v))
            {
                headers.append(name, value);
            }
        }
        Seen { path_and_query: r.uri, headers }
    }
}

/// The suite's upstream: a [`MockUpstream`] answering as a provider that demands
/// `Authorization: Bearer API_KEY` (see [`upstream_reply`]).
pub struct Upstream {
    pub mock: MockUpstream,
}

/// How the suite's upstream answers: vault-served paths take any key; `/q/*` wants exactly
/// one `api_key` query parameter, ours; `/basic` wants HTTP Basic; the rest the bearer key.
fn upstream_reply(req: &Recorded) -> Reply {
    let text = |status: u16, body: &str| Reply::body(status, "text/plain; charset=utf-8", body.to_owned());
    let path = req.path().to_owned();
    // Vault-served routes: any key is accepted; the tests read what was injected.
    if path.starts_with("/anykey/") {
        return text(200, "served");
    }
    let auth = req.header("authorization");
    let query = req.uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let authorized = if path.starts_with("/q/") {
        // Query injection: exactly one api_key, ours.
        query.split('&').filter(|p| p.starts_with("api_key=")).collect::<Vec<_>>() == vec![format!("api_key={API_KEY}")]
    } else if path == "/basic" {
        use base64::Engine as _;
        auth == Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("svc:{API_KEY}"))))
    } else {
        auth == Some(format!("Bearer {API_KEY}"))
    };
    if !authorized {
        return text(401, "missing or wrong API key");
    }
    match path.as_str() {
        p if p.starts_with("/weather/") => {
            let city = p.trim_start_matches("/weather/");
            Reply::json(200, &serde_json::json!({ "city": city, "temp_c": 21 }))
        }
        "/echo" | "/basic" => Reply::body(200, "application/octet-stream", req.body.clone()),
        p if p.starts_with("/q/") => text(200, "query ok"),
        "/fail" => text(500, "upstream exploded"),
        "/missing" => text(404, "no such thing"),
        "/slow" => text(200, "late").delayed(Duration::from_secs(5)),
        "/slowok" => text(200, "slow but fine").delayed(Duration::from_millis(400)),
        "/redirect" => Reply::Fixed {
            status: 302,
            headers: vec![("location".into(), "http://127.0.0.1:9/elsewhere".into())],
            body: Default::default(),
        },
        _ => text(404, "unknown upstream path"),
    }
}

impl Upstream {
    /// Starts on a free port; returns its base URL.
    pub async fn start() -> (Upstream, String) {
        let mock = MockUpstream::answering(Reply::with(upstream_reply)).await.unwrap();
        let url = mock.url();
        (Upstream { mock }, url)
    }

    pub fn calls(&self) -> usize {
        self.mock.total_hits() as usize
    }

    pub fn last(&self) -> Seen {
        self.mock.last_request().expect("the upstream saw a request").into()
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
    /// The configuration text this harness started with.
    pub config_text: String,
    /// The ledger database's URL (tests inject faults into it with SQL).
    pub db_url: String,
    /// The environment the configuration reads its secrets from.
    pub env: HashMap<String, String>,
    /// The proxy between the gateway and anvil, with [`Options::rpc_proxy`].
    pub rpc: Option<RpcFaultProxy>,
    _db_dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
    running: Option<TestGateway>,
}

/// Extra knobs for a harness.
#[derive(Debug, Clone)]
pub struct Options {
    /// `settlement.receipt_timeout_ms`.
    pub receipt_timeout_ms: u64,
    /// `settlement.recovery_interval_ms` (the recovery sweep's and the deferred worker's
    /// periodic backlog read): 200 ms by default.
    pub recovery_interval_ms: u64,
    /// TOML appended to the configuration (e.g. a `[reconciliation]` section).
    pub extra_config: String,
    /// TOML lines added to the `[settlement]` table.
    pub settlement_config: String,
    /// `settlement.health_interval_ms`. An hour by default: the readiness monitor then checks
    /// once at startup, so tests that drain the relayer to see the node refuse a broadcast
    /// are not raced by the monitor refusing first.
    pub health_interval_ms: u64,
    /// TOML lines added to the `[server]` table. By default the per-IP limit on requests
    /// without a valid payment is off (`unpaid_per_ip_per_s = 0`): every test client is
    /// 127.0.0.1, and tests of other behaviour send floods of quotes, bad payments and
    /// concurrent replays on purpose; `limits.rs` tests the limit.
    pub server_config: String,
    /// The providers' upstream instead of the harness's own (e.g. a TLS `MockUpstream`).
    pub upstream_url: Option<String>,
    /// The network's `rpc_url` instead of anvil's (e.g. a TLS proxy in front of it).
    pub rpc_url: Option<String>,
    /// The gateway reaches anvil through an [`RpcFaultProxy`] (kept in [`Harness::rpc`]).
    pub rpc_proxy: bool,
    /// Providers added after the suite's own.
    pub providers: Vec<ProviderConfig>,
    /// The network's `finality_confirmations` (unset: the gateway's default).
    pub finality_confirmations: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            receipt_timeout_ms: 10_000,
            recovery_interval_ms: 200,
            extra_config: String::new(),
            settlement_config: String::new(),
            health_interval_ms: 3_600_000,
            server_config: "unpaid_per_ip_per_s = 0\n".to_owned(),
            upstream_url: None,
            rpc_url: None,
            rpc_proxy: false,
            providers: Vec::new(),
            finality_confirmations: None,
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
        let rpc = if opts.rpc_proxy { Some(RpcFaultProxy::start(&chain.anvil.url).await.unwrap()) } else { None };
        let rpc_url = match &rpc {
            Some(proxy) => proxy.url(),
            None => opts.rpc_url.clone().unwrap_or(chain.anvil.url.clone()),
        };
        let mut config = config(&db_url, &rpc_url, &upstream_url, payee, &opts);
        for p in &opts.providers {
            config = config.provider(p.clone());
        }
        let text = config.raw(&opts.extra_config).build();
        let db_url = db_url.clone();
        let env = [
            ("TEST_RELAYER_KEY", format!("{:#x}", relayer.to_bytes())),
            ("TEST_API_KEY", API_KEY.to_owned()),
            ("TEST_VAULT_KEY", VAULT_KEY.to_owned()),
        ];
        let now = chain.latest_timestamp().await.unwrap();
        let clock = Arc::new(FixedClock::new(now));
        let running = TestGateway::start(&text, &env, clock.clone()).await.expect("gateway starts");
        let gateway = running.gateway().clone();
        let url = running.url().to_owned();
        let admin_url = running.admin_url().expect("the admin API").to_owned();
        let operator = running.admin_token(Role::Operator, None).await;
        let payer = chain.funded_payer(1_000_000).await.unwrap();
        let env = running.env().clone();
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
            rpc,
            _db_dir: db_dir,
            pg,
            running: Some(running),
        })
    }

    /// Another gateway process on the same configuration and database (a replica), serving
    /// on its own port until the returned sender is dropped.
    pub async fn start_replica(&self) -> (Arc<Gateway>, String, tokio::sync::oneshot::Sender<()>) {
        let (gw, url, _, tx) = self.running().replica(false).await.expect("replica starts").into_parts();
        (gw, url, tx)
    }

    /// A replica with its admin API: (gateway, url, admin url, stop sender).
    pub async fn start_replica_with_admin(&self) -> (Arc<Gateway>, String, String, tokio::sync::oneshot::Sender<()>) {
        let (gw, url, admin, tx) = self.running().replica(true).await.expect("replica starts").into_parts();
        (gw, url, admin.expect("the replica's admin API"), tx)
    }

    fn running(&self) -> &TestGateway {
        self.running.as_ref().expect("the harness's gateway runs")
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
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
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

    /// The reservation the gateway makes for `b` on `GET path` of the `weather` route in
    /// `mode` (valid 600 s from `now`, no stored payment, no credential): what a process leaves
    /// behind when it dies mid-call. Tests change the fields their scene needs.
    pub fn weather_entry(&self, b: &PaymentBuilder, path: &str, mode: SettlementMode) -> NewEntry {
        NewEntry {
            chain_id: 8453,
            asset: self.chain.token,
            payer: b.from,
            pay_to: b.to,
            nonce: b.nonce,
            amount: AtomicAmount::new(PRICE_ATOMIC).unwrap(),
            valid_before_unix_s: self.now + 600,
            provider: "weather".to_owned(),
            route: "weather:/weather/{city}".to_owned(),
            method: "GET".to_owned(),
            path: path.to_owned(),
            mode,
            payment: "{}".to_owned(),
            price_version: Some(1),
            credential: None,
            credential_version: None,
            now_unix_s: self.now,
        }
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

/// Serves `gateway`'s paid listener on a free port until the sender is used or dropped.
pub async fn serve_on_free_port(gateway: Arc<Gateway>) -> (String, tokio::sync::oneshot::Sender<()>) {
    tollgate_test_support::serve_paid(gateway).await.unwrap()
}

/// The admin router on a free port, for the life of the test.
pub async fn serve_admin_on_free_port(gateway: Arc<Gateway>) -> String {
    tollgate_test_support::serve_admin(gateway).await.unwrap()
}

/// A token of `role` made directly in the database.
pub async fn admin_token(gw: &Gateway, role: Role, provider: Option<&str>) -> String {
    tollgate_test_support::admin_token(gw, role, provider).await
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

/// The suite's configuration: every provider and route the tests call, on the suite's
/// upstream, with quick receipt polling and recovery (the readiness monitor checks once).
fn config(db_url: &str, rpc_url: &str, upstream_url: &str, payee: Address, opts: &Options) -> ConfigBuilder {
    let route = |path: &str| RouteConfig::new(path, PRICE_ATOMIC);
    let provider = |id: &str, upstream: &str| ProviderConfig::new(id, payee, upstream);
    ConfigBuilder::new()
        .public_url("http://gateway.test")
        .set("server", "body_bytes_max", 4096u64)
        .lines("server", &opts.server_config)
        .database(db_url)
        // The test upstreams are on loopback, which the SSRF guard refuses unless allowed
        // (control::ssrf_* remove this line).
        .allow_loopback_upstreams()
        .vault_env("TEST_VAULT_KEY")
        .set("control", "poll_interval_ms", 100u64)
        .relayer_env("TEST_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 5u64)
        .set("settlement", "receipt_timeout_ms", opts.receipt_timeout_ms)
        .set("settlement", "recovery_interval_ms", opts.recovery_interval_ms)
        .set("settlement", "recovery_grace_s", 3600u64)
        .set("settlement", "health_interval_ms", opts.health_interval_ms)
        .lines("settlement", &opts.settlement_config)
        .network(match opts.finality_confirmations {
            Some(n) => NetworkConfig::base(rpc_url).set("finality_confirmations", n),
            None => NetworkConfig::base(rpc_url),
        })
        .provider(
            provider("weather", upstream_url)
                .upstream_timeout_ms(1000)
                .credential_header("TEST_API_KEY")
                .route(route("/weather/{city}").description("Weather"))
                .route(route("/echo").methods(&["POST"]))
                .route(route("/fail"))
                .route(route("/missing"))
                .route(route("/slow"))
                .route(route("/slowok"))
                .route(route("/redirect")),
        )
        .provider(
            provider("vaulted", upstream_url)
                .strip_prefix("/vaulted")
                .credential_vault("main")
                .route(route("/vaulted/anykey/{x}")),
        )
        .provider(provider("down", "http://127.0.0.1:1").credential_header("TEST_API_KEY").route(route("/down")))
        .provider(
            provider("via-query", upstream_url)
                .strip_prefix("/viaquery")
                .credential_query("api_key", "TEST_API_KEY")
                .route(route("/viaquery/q/{x}")),
        )
        .provider(
            provider("via-basic", upstream_url)
                .strip_prefix("/viabasic")
                .credential_basic("svc", "TEST_API_KEY")
                .route(route("/viabasic/basic")),
        )
        .provider(
            provider("weather-deferred", upstream_url)
                .strip_prefix("/deferred")
                .credential_header("TEST_API_KEY")
                .route(route("/deferred/weather/{city}").settlement("deferred"))
                .route(route("/deferred/fail").settlement("deferred")),
        )
        .provider(
            provider("weather-before", upstream_url)
                .strip_prefix("/before")
                .credential_header("TEST_API_KEY")
                .route(route("/before/weather/{city}").settlement("before"))
                .route(route("/before/fail").settlement("before")),
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
                if let Some(h) = $crate::harness::Harness::start($crate::harness::Engine::Sqlite).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = $crate::harness::Harness::start($crate::harness::Engine::Postgres).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
        }
    };
}
