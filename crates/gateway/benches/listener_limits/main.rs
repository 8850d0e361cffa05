//! The public listener under attack, and what TLS and idle connections cost. Prints numbers;
//! asserts only that the stack works (every paid call must answer 200).
//!
//! The gateway runs as a **child process** (this very binary re-executed with
//! `TOLLGATE_BENCH_CHILD_CONFIG`: `Gateway::start` + `tollgate_gateway::serve`, the code
//! `tollgate serve` runs), so its CPU time and memory are its own; the bench process is the
//! clients, the upstream (a tiny axum app requiring `Authorization: Bearer`) and an
//! `RpcFaultProxy` in front of anvil that counts every JSON-RPC call the gateway makes. anvil
//! (automine) holds the token at Base's USDC address. Everything is on loopback; attackers
//! use their own source addresses in 127.0.0.0/8 so the per-IP limit sees them as distinct
//! clients, and the paying client is 127.0.0.1. The gateway uses its defaults for every limit.
//!
//! Scenarios (`TOLLGATE_BENCH_SCENARIOS`, default `flood,tls,rss`):
//! - `flood`: a paying client's latency (mode `after`: full verification, settlement on chain
//!   before the answer; one call at a time over a keep-alive connection) on an idle gateway,
//!   then while 2,000 slowloris connections (a header line every second, never the end of the
//!   head; reconnecting when cut), a flood of unpaid requests and a flood of validly signed
//!   payments from unfunded wallets (a fresh wallet per payment) hit the listener. Before the
//!   paying client is measured under attack, the RPC calls the attack caused are counted over a
//!   window with no paying traffic, less the readiness monitor's own calls measured over an
//!   idle window of the same length. Target: p99 under attack within 2× of idle.
//! - `tls`: the same paid calls over plain HTTP and over HTTPS (a test CA, TLS 1.3, one
//!   keep-alive connection): p50/p99 and the gateway process's CPU per call; then unpaid
//!   quotes on the same connection (no chain, no upstream: the gateway alone), where the
//!   per-request cost of TLS is not drowned by the chain's variance. Three gateways each,
//!   interleaved.
//! - `rss`: the gateway's `VmRSS` (/proc/<pid>/status) with no client connection, then with
//!   1,000 idle keep-alive connections open (each served one request), plain and TLS.
//!
//! Knobs: `TOLLGATE_BENCH_CALLS` (paid calls per measurement, default 300),
//! `TOLLGATE_BENCH_SLOWLORIS` (2000), `TOLLGATE_BENCH_UNPAID_RPS` (1000),
//! `TOLLGATE_BENCH_UNFUNDED_RPS` (1000), `TOLLGATE_BENCH_IDLE_CONNS` (1000).
//! The bench raises its own file-descriptor soft limit to the hard limit (the sockets of
//! 2,000 slowloris connections and the floods); the gateway raises its own at startup.
//! Run: `cargo bench -p tollgate-gateway --bench listener_limits`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::Address;
use anyhow::{Context, bail, ensure};
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tollgate_gateway::{Config, Gateway};
use tollgate_test_support::{
    Deployment, PaymentBuilder, RpcFaultProxy, TestCa, TestChain, anvil_key, random_key, v2_header,
};
use tollgate_verifier::{Clock, SystemClock};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header, v2};

const API_KEY: &str = "sk-bench-upstream-7d1f0e9a3c";
const BEARER: &str = "Bearer sk-bench-upstream-7d1f0e9a3c";
const PRICE_ATOMIC: u64 = 1_000;
const CHAIN_ID: u64 = 8453;
const WARMUP: usize = 20;
const VALIDITY_S: u64 = 3_600;
/// Distinct unfunded wallets, each signing one payment; the flood cycles through them (a
/// cycle is longer than the balance cache's 2 s, so every payment is a stranger to it).
const UNFUNDED_POOL: usize = 4_000;
const RPC_WINDOW: Duration = Duration::from_secs(5);
const SLOWLORIS_FROM: [&str; 8] =
    ["127.0.0.30", "127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34", "127.0.0.35", "127.0.0.36", "127.0.0.37"];
const UNPAID_FROM: [&str; 4] = ["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"];
const UNFUNDED_FROM: [&str; 4] = ["127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"];

fn main() -> anyhow::Result<()> {
    if let Ok(config) = std::env::var("TOLLGATE_BENCH_CHILD_CONFIG") {
        return child(Path::new(&config));
    }
    let fds = raise_fd_limit();
    let s = Settings::from_env()?;
    println!(
        "machine: cores={} loadavg_at_start={} fd_soft_limit={fds} (raised to the hard limit)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg()
    );
    // Separate runtimes, so that the attackers' tasks never delay the paying client's clock
    // nor the upstream and the RPC proxy the gateway depends on.
    let infra = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let attack = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stack = infra.block_on(Stack::start())?;
    for scenario in &s.scenarios {
        match scenario.as_str() {
            "flood" => flood(&s, &stack, &infra, &attack, &client)?,
            "tls" => tls(&s, &stack, &infra, &client)?,
            "rss" => rss(&s, &stack, &infra, &client)?,
            other => bail!("unknown scenario {other:?} (flood, tls, rss)"),
        }
    }
    println!("loadavg_at_end={}", loadavg());
    Ok(())
}

struct Settings {
    calls: usize,
    slowloris: usize,
    unpaid_rps: u32,
    unfunded_rps: u32,
    idle_conns: usize,
    scenarios: Vec<String>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let n = |name: &str, default: usize| -> anyhow::Result<usize> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?}")),
                Err(_) => Ok(default),
            }
        };
        Ok(Settings {
            calls: n("TOLLGATE_BENCH_CALLS", 300)?,
            slowloris: n("TOLLGATE_BENCH_SLOWLORIS", 2000)?,
            unpaid_rps: u32::try_from(n("TOLLGATE_BENCH_UNPAID_RPS", 1000)?)?,
            unfunded_rps: u32::try_from(n("TOLLGATE_BENCH_UNFUNDED_RPS", 1000)?)?,
            idle_conns: n("TOLLGATE_BENCH_IDLE_CONNS", 1000)?,
            scenarios: std::env::var("TOLLGATE_BENCH_SCENARIOS")
                .unwrap_or_else(|_| "flood,tls,rss".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }
}

use tollgate_test_support::loadavg;

fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (now.current, now.maximum)
        && hard > soft
    {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The gateway process.

/// Child mode: serve the configuration at `path` until stdin closes.
fn child(path: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let text = std::fs::read_to_string(path)?;
        let config = Config::parse(&text, &|k| std::env::var(k).ok()).context("child config")?;
        let gw = Gateway::start(config, Arc::new(SystemClock)).await.context("gateway start")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut buf = [0u8; 1];
                let _ = std::io::Read::read(&mut std::io::stdin(), &mut buf);
            })
            .await;
        };
        tollgate_gateway::serve(listener, gw, stop).await?;
        Ok(())
    })
}

struct GatewayChild {
    child: tokio::process::Child,
    addr: String,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl GatewayChild {
    /// A gateway on its defaults, plus the `[server]` lines `extra`, serving TLS with a
    /// certificate of `tls` when given.
    async fn spawn(stack: &Stack, tls: Option<&TestCa>, extra: &str) -> anyhow::Result<GatewayChild> {
        let dir = tempfile::tempdir()?;
        let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
        let mut server = extra.to_owned();
        if let Some(ca) = tls {
            let (cert, key) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
            ca.issue_to(&["localhost", "127.0.0.1"], &cert, &key)?;
            server += &format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n", cert.display(), key.display());
        }
        let text = config_text(&db_url, &stack.proxy.url(), &stack.upstream_url, stack.payee, &server);
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, text)?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env("TOLLGATE_BENCH_CHILD_CONFIG", &path)
            .env("BENCH_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes()))
            .env("BENCH_API_KEY", API_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("child pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("gateway child did not start in 60 s")??
            .context("gateway child exited")?;
        let addr = line.strip_prefix("listening ").context("unexpected child output")?.to_owned();
        Ok(GatewayChild { child, addr, pid, _dir: dir })
    }

    fn url(&self, tls: bool) -> String {
        if tls {
            format!("https://localhost:{}", self.addr.rsplit(':').next().unwrap_or_default())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The process's CPU time so far (user + system), from /proc/<pid>/stat.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }

    /// `VmRSS` in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

fn config_text(db_url: &str, rpc_url: &str, upstream_url: &str, payee: Address, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gateway.test"
{server}

[database]
url = "{db_url}"

[settlement]
relayer_key_env = "BENCH_RELAYER_KEY"
receipt_poll_interval_ms = 5
receipt_timeout_ms = 10000
recovery_interval_ms = 1000
recovery_grace_s = 3600

[[networks]]
id = "eip155:{CHAIN_ID}"
rpc_url = "{rpc_url}"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "weather"
pay_to = "{payee:#x}"
upstream = "{upstream_url}"
credential = {{ inject = "header", secret_env = "BENCH_API_KEY" }}

[[providers.routes]]
path = "/weather/{{city}}"
price_atomic = "{PRICE_ATOMIC}"
settlement = "after"
"#
    )
}

// ---------------------------------------------------------------------------------------
// The stack beside the gateway.

struct Stack {
    chain: TestChain,
    proxy: RpcFaultProxy,
    upstream_url: String,
    payee: Address,
    payer: PrivateKeySigner,
}

async fn weather(UrlPath(city): UrlPath<String>, headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(BEARER) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    axum::Json(serde_json::json!({ "city": city, "temp_c": 21 })).into_response()
}

impl Stack {
    async fn start() -> anyhow::Result<Stack> {
        let chain = TestChain::start(Deployment::BaseUsdc).await?;
        let proxy = RpcFaultProxy::start(&chain.anvil.url).await?;
        let app = axum::Router::new().route("/weather/{city}", axum::routing::get(weather));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let upstream_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let payer = random_key();
        chain.mint(payer.address(), 1_000_000_000_000).await?;
        Ok(Stack { chain, proxy, upstream_url, payee: random_key().address(), payer })
    }

    async fn now(&self) -> anyhow::Result<u64> {
        Ok(SystemClock.now_unix_s().max(self.chain.latest_timestamp().await?))
    }
}

fn http(from: Option<&str>, ca: Option<&TestCa>) -> anyhow::Result<reqwest::Client> {
    let mut b = match ca {
        Some(ca) => ca.client_tls().reqwest_builder(),
        None => tollgate_test_support::http_builder(),
    };
    if let Some(ip) = from {
        b = b.local_address(ip.parse::<IpAddr>()?);
    }
    Ok(b.redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn offer(http: &reqwest::Client, base: &str) -> anyhow::Result<v2::PaymentRequirements> {
    let resp = http.get(format!("{base}/weather/probe")).send().await?;
    ensure!(resp.status() == StatusCode::PAYMENT_REQUIRED, "quote: {}", resp.status());
    let raw = resp.headers().get("payment-required").context("no PAYMENT-REQUIRED")?.as_bytes().to_vec();
    let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX)?;
    challenge.accepts.into_iter().next().context("no offer")
}

fn sign(offer: &v2::PaymentRequirements, key: &PrivateKeySigner, now: u64) -> String {
    let mut b = PaymentBuilder::new(offer, key, now);
    b.valid_before = now + VALIDITY_S;
    v2_header(&b)
}

/// `n` paid calls, one at a time over one keep-alive connection; every one must be 200.
/// Latencies in microseconds.
async fn paid_series(http: &reqwest::Client, base: &str, headers: Vec<String>) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    for (i, header) in headers.into_iter().enumerate() {
        let started = Instant::now();
        let resp = http.get(format!("{base}/weather/city{i}")).header("payment-signature", header).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        ensure!(status == StatusCode::OK, "paid call {i}: {status} {}", String::from_utf8_lossy(&body));
        if i >= WARMUP {
            h.record(u64::try_from(started.elapsed().as_micros())?)?;
        }
    }
    Ok(h)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------
// Scenario `flood`.

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    s402: AtomicU64,
    s429: AtomicU64,
    s503: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
}

impl Tally {
    fn record(&self, r: &Result<reqwest::Response, reqwest::Error>) {
        let slot = match r {
            Ok(resp) => match resp.status().as_u16() {
                402 => &self.s402,
                429 => &self.s429,
                503 => &self.s503,
                _ => &self.other,
            },
            Err(_) => &self.errors,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 7] {
        [&self.sent, &self.s402, &self.s429, &self.s503, &self.other, &self.errors, &self.skipped]
            .map(|a| a.load(Ordering::Relaxed))
    }
}

fn tally_line(name: &str, before: [u64; 7], after: [u64; 7], secs: f64) -> String {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    format!(
        "{name}: sent={} ({:.0}/s) 402={} 429={} 503={} other={} errors={} skipped_at_client={}",
        d[0],
        d[0] as f64 / secs,
        d[1],
        d[2],
        d[3],
        d[4],
        d[5],
        d[6]
    )
}

mod scenarios;

use scenarios::{flood, rss, tls};
