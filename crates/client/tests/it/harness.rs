//! A real gateway for client tests, on the test kit: anvil with the token at Base's USDC
//! address (chain 8453), a [`MockUpstream`], the gateway in-process on a free port
//! ([`TestGateway`]) with a SQLite ledger and its configuration from [`ConfigBuilder`], and
//! two loopback helpers: a TCP proxy that can lose a response, and a v1-only front that
//! hides the v2 challenge header.
//!
//! The CLI's tests include this file too (`#[path]`), so both suites start the gateway the
//! same way.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_client::{ClientConfig, Clock};
use tollgate_gateway::Gateway;
use tollgate_metering::{Entry, EntryState};
use tollgate_test_support::{
    ConfigBuilder, Deployment, MockUpstream, NetworkConfig, ProviderConfig, Recorded, Reply, RouteConfig, TestChain,
    TestGateway, anvil_key, random_key, sqlite_url,
};
use tollgate_verifier::SystemClock;
use tollgate_x402::PaymentPayload;

pub const PRICE: u64 = 1_000;
/// How long `/slow` makes the gateway wait.
pub const SLOW_MS: u64 = 1_500;

/// A clock tests can move (the client's `validBefore` is computed from it).
#[derive(Debug)]
pub struct TestClock(pub AtomicU64);

impl TestClock {
    pub fn system() -> Arc<TestClock> {
        Arc::new(TestClock(AtomicU64::new(tollgate_client::SystemClock.now_unix_s())))
    }
    pub fn advance(&self, s: u64) {
        self.0.fetch_add(s, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_unix_s(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An RPC URL and the clock to move with the chain.
pub type WarpPlan = (String, Arc<TestClock>);

/// The upstream the gateway forwards to: a [`MockUpstream`] counting calls and answering
/// as [`Upstream::reply`] says.
#[derive(Clone)]
pub struct Upstream {
    pub calls: Arc<AtomicUsize>,
    /// When set, the next `/warp` call moves the chain (and this clock) 600 s ahead before
    /// answering, so the gateway's settlement of the current authorization fails as expired.
    pub warp: Arc<Mutex<Option<WarpPlan>>>,
    pub mock: Arc<MockUpstream>,
}

impl Upstream {
    async fn reply(self, req: Recorded) -> Reply {
        let text = |status: u16, body: &str| Reply::body(status, "text/plain; charset=utf-8", body.to_owned());
        self.calls.fetch_add(1, Ordering::SeqCst);
        match req.path() {
            p if p.starts_with("/weather/") => {
                Reply::json(200, &serde_json::json!({ "city": p.trim_start_matches("/weather/"), "temp_c": 21 }))
            }
            "/slow" => text(200, "late but fine").delayed(Duration::from_millis(SLOW_MS)),
            "/fail" => text(500, "upstream exploded"),
            "/warp" => {
                let plan = self.warp.lock().unwrap().take();
                if let Some((rpc, clock)) = plan {
                    let http = tollgate_test_support::http();
                    for (method, params) in
                        [("evm_increaseTime", serde_json::json!([600])), ("evm_mine", serde_json::json!([]))]
                    {
                        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
                        let req = http.post(&rpc).header("content-type", "application/json").body(body.to_string());
                        req.send().await.unwrap().error_for_status().unwrap();
                    }
                    clock.advance(600);
                }
                text(200, "warp ok")
            }
            _ => text(404, "unknown upstream path"),
        }
    }

    async fn start() -> (Upstream, String) {
        let mock = Arc::new(MockUpstream::start().await.unwrap());
        let up = Upstream { calls: Arc::default(), warp: Arc::default(), mock: mock.clone() };
        let responder = up.clone();
        mock.set_default(Reply::with_async(move |req| responder.clone().reply(req)));
        let url = mock.url();
        (up, url)
    }
}

/// Chain, upstream and gateway.
pub struct Harness {
    pub chain: TestChain,
    pub gateway: Arc<Gateway>,
    pub url: String,
    pub payee: Address,
    pub upstream: Upstream,
    _dir: tempfile::TempDir,
    // Dropped with the harness: the paid listener stops.
    _running: TestGateway,
}

impl Harness {
    /// Starts everything; the recovery sweep acts on entries untouched for `grace_s`.
    pub async fn start(grace_s: u64) -> Harness {
        Harness::start_with(grace_s, None).await
    }

    /// [`Harness::start`] with the paid listener serving https under a certificate for
    /// `localhost` issued by `ca` (the URL names `localhost`).
    pub async fn start_tls(grace_s: u64, ca: &tollgate_test_support::TestCa) -> Harness {
        Harness::start_with(grace_s, Some(ca)).await
    }

    async fn start_with(grace_s: u64, ca: Option<&tollgate_test_support::TestCa>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db_url = sqlite_url(dir.path());
        let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
        let (upstream, upstream_url) = Upstream::start().await;
        let payee = random_key().address();
        let mut builder = config(&db_url, &chain.anvil.url, &upstream_url, payee, grace_s);
        if let Some(ca) = ca {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            ca.issue_to(&["localhost"], &cert, &key).unwrap();
            builder = builder.set("server", "tls_cert_file", cert.display().to_string()).set(
                "server",
                "tls_key_file",
                key.display().to_string(),
            );
        }
        let text = builder.build();
        let relayer = format!("{:#x}", anvil_key(9).to_bytes());
        let running = TestGateway::start_paid(&text, &[("TEST_RELAYER_KEY", relayer)], Arc::new(SystemClock))
            .await
            .expect("gateway starts");
        let gateway = running.gateway().clone();
        // The certificate names `localhost`, not the loopback address the listener reports.
        let url = running.url().replace("https://127.0.0.1:", "https://localhost:");
        Harness { chain, gateway, url, payee, upstream, _dir: dir, _running: running }
    }

    pub fn addr(&self) -> SocketAddr {
        let host_port = self.url.trim_start_matches("http://").trim_start_matches("https://");
        host_port.replace("localhost:", "127.0.0.1:").parse().unwrap()
    }

    /// A payer holding `amount` of the token.
    pub async fn funded_payer(&self, amount: u64) -> PrivateKeySigner {
        self.chain.funded_payer(amount).await.unwrap()
    }

    pub async fn payee_balance(&self) -> U256 {
        self.chain.balance(self.payee).await.unwrap()
    }

    /// Every ledger entry of `payer`.
    pub async fn entries(&self, payer: Address) -> Vec<Entry> {
        self.gateway.ledger.entries().of_payer(8453, self.chain.token, payer, 100).await.unwrap()
    }

    /// Polls the ledger until every entry of `payer` is terminal (bounded).
    pub async fn wait_terminal(&self, payer: Address) -> Vec<Entry> {
        for _ in 0..1000 {
            let all = self.entries(payer).await;
            if !all.is_empty() && all.iter().all(|e| e.state.is_terminal()) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("entries never became terminal: {:?}", self.entries(payer).await);
    }

    /// Polls until the ledger has an entry of `payer` in `state` (bounded).
    pub async fn wait_state(&self, payer: Address, state: EntryState) -> Entry {
        for _ in 0..1000 {
            if let Some(e) = self.entries(payer).await.into_iter().find(|e| e.state == state) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no entry reached {state:?}: {:?}", self.entries(payer).await);
    }
}

/// A client configuration for tests: quick backoff, bounded timeouts.
pub fn client_config(payer: &PrivateKeySigner, store: &Path) -> ClientConfig {
    let mut c = ClientConfig::new(payer.clone(), store);
    c.request_timeout = Duration::from_secs(15);
    c.connect_timeout = Duration::from_secs(2);
    c.retries = 2;
    c.retry_backoff_initial = Duration::from_millis(50);
    c.retry_backoff_max = Duration::from_millis(500);
    c
}

/// The suite's configuration: quick receipt polling and recovery after `grace_s`.
fn config(db_url: &str, rpc_url: &str, upstream_url: &str, payee: Address, grace_s: u64) -> ConfigBuilder {
    let route = |path: &str| RouteConfig::new(path, PRICE);
    ConfigBuilder::new()
        .public_url("http://gateway.test")
        .database(db_url)
        .relayer_env("TEST_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 5u64)
        .set("settlement", "receipt_timeout_ms", 10_000u64)
        .set("settlement", "recovery_interval_ms", 200u64)
        .set("settlement", "recovery_grace_s", grace_s)
        // The readiness monitor checks once at startup only: these tests drain the relayer to
        // see the node refuse a broadcast, which the monitor would otherwise race to refuse first.
        .set("settlement", "health_interval_ms", 3_600_000u64)
        .network(NetworkConfig::base(rpc_url))
        .provider(
            ProviderConfig::new("weather", payee, upstream_url)
                .upstream_timeout_ms(5000)
                .route(route("/weather/{city}").description("Weather"))
                .route(route("/slow"))
                .route(route("/fail"))
                .route(route("/warp")),
        )
        .provider(
            ProviderConfig::new("weather-deferred", payee, upstream_url)
                .strip_prefix("/deferred")
                .route(route("/deferred/weather/{city}").settlement("deferred")),
        )
        // Keeps answers for payment-identifier replays (x402 extension, issue 19).
        .provider(
            ProviderConfig::new("weather-kept", payee, upstream_url)
                .strip_prefix("/kept")
                .route(route("/kept/weather/{city}").set("replay_body_bytes_max", 4096u64)),
        )
}

/// When the lossy proxy loses the answer to the next paid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lose {
    /// Forward the request, wait for the gateway's answer (it has settled by then), then
    /// close both connections without relaying it.
    Response,
    /// Forward the request, then close the client's connection at once; the gateway's side
    /// stays open and its answer is read and thrown away.
    ClientSide,
}

/// A loopback TCP proxy to `target`. Returns its URL and the switch that arms a loss.
pub async fn lossy_proxy(target: SocketAddr) -> (String, Arc<Mutex<Option<Lose>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let plan: Arc<Mutex<Option<Lose>>> = Arc::default();
    let p = plan.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(pipe(client, target, p.clone()));
        }
    });
    (url, plan)
}

fn carries_payment(bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    lower.windows(18).any(|w| w == b"payment-signature:") || lower.windows(10).any(|w| w == b"x-payment:")
}

async fn pipe(client: TcpStream, target: SocketAddr, plan: Arc<Mutex<Option<Lose>>>) {
    let Ok(upstream) = TcpStream::connect(target).await else { return };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let (mut cbuf, mut ubuf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut client_open = true;
    let mut lose_next_answer = false;
    loop {
        tokio::select! {
            r = cr.read(&mut cbuf), if client_open => {
                let Ok(n) = r else { return };
                if n == 0 { return; }
                let paid = carries_payment(&cbuf[..n]);
                if uw.write_all(&cbuf[..n]).await.is_err() { return; }
                if paid {
                    let armed = plan.lock().unwrap().take();
                    match armed {
                        Some(Lose::Response) => lose_next_answer = true,
                        Some(Lose::ClientSide) => {
                            let _ = cw.shutdown().await;
                            client_open = false;
                        }
                        None => {}
                    }
                }
            }
            r = ur.read(&mut ubuf) => {
                let Ok(n) = r else { return };
                if n == 0 || lose_next_answer { return; }
                if client_open && cw.write_all(&ubuf[..n]).await.is_err() { return; }
            }
        }
    }
}

/// A v1-only server in front of the gateway: it drops the v2 `PAYMENT-REQUIRED` and
/// `PAYMENT-RESPONSE` headers (so only the v1 body and `X-PAYMENT-RESPONSE` remain), and
/// records the version of every payment header it sees, refusing v2 ones.
pub async fn v1_front(gateway: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let s = seen.clone();
    let http = tollgate_test_support::http();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (http, gateway, seen) = (http.clone(), gateway.clone(), s.clone());
        async move {
            if req.headers().contains_key("payment-signature") {
                return (StatusCode::BAD_REQUEST, "v2 payment sent to a v1 server").into_response();
            }
            let mut out = http.request(req.method().clone(), format!("{gateway}{}", req.uri()));
            if let Some(p) = req.headers().get("x-payment") {
                let decoded = PaymentPayload::from_header(p.as_bytes(), 16 * 1024).unwrap();
                seen.lock().unwrap().push(decoded.version());
                out = out.header("x-payment", p.clone());
            }
            let resp = out.send().await.unwrap();
            let status = resp.status();
            let mut headers = resp.headers().clone();
            headers.remove("payment-required");
            headers.remove("payment-response");
            headers.remove("content-length");
            let body = resp.bytes().await.unwrap();
            (status, headers, body).into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}
