//! The outside load run (issue 17, "Measure"): a fresh anvil with the token at Base's USDC
//! address, a bare upstream in this process, the real `tollgate serve` binary as its own
//! process on SQLite (a temporary file) or PostgreSQL (a fresh database), and a keep-alive
//! client sending pre-signed EIP-3009 payments with a fixed number in flight.
//!
//! Owns the run and its measures: client-side latency (HDR histogram) and calls/s; the
//! upstream alone (`direct`) for the overhead; fsyncs per call (the gateway's own, counted by
//! `perf stat` on the `sys_enter_fsync`/`sys_enter_fdatasync` tracepoints or by
//! `strace -f -c`, and on PostgreSQL the server's WAL syncs from `pg_stat_wal`); RPC calls
//! per call by method from the gateway's own `tollgate_rpc_calls_total` counters on its admin
//! `/metrics`; the drain (from the last answer until every ledger entry is terminal); gas per
//! settled call from the receipts of the settled entries' distinct transactions; and the
//! chain check, which joins every 2xx answer (its authorization, its `Tollgate-Receipt` or
//! `PAYMENT-RESPONSE` transaction) with the ledger and the chain's receipts and logs.
//!
//! The counting windows (syscalls, RPC counters) run from the first measured call to the end
//! of the drain, so a deferred call's background settlement is counted with it. Warm-up calls
//! are answered and drained before the window opens, and they are in the chain check.
//!
//! Must not: change the gateway's defaults unless a setting says so (the "defaults"
//! rows), count a call as paid without its transfer on chain, or call a result good when a
//! count could not be made (an unavailable tool is said, never printed as 0). Shared with the
//! cli's test suite (`tests/it/serve_load.rs`), which runs it with a tiny N so it cannot rot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256, keccak256};
use anyhow::{Context, bail, ensure};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::Connection;
use tollgate_metering::{EntryState, Ledger, LedgerOptions};
use tollgate_test_support::{
    ConfigBuilder, Deployment, NetworkConfig, PaymentBuilder, PgDatabase, ProviderConfig, RouteConfig, TestChain,
    TestGateway, TomlValue, anvil_key, random_key, sqlite_url, v2_header,
};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header, v2};

// Explicit paths: this file is also a `#[path]` module of the CLI tests, where a bare `mod`
// would look for its children beside it rather than under `load/`.
#[path = "load/checks.rs"]
mod checks;
#[path = "load/syscalls.rs"]
mod syscalls;

use checks::{chain_check, commit, drain, unix_now};
use syscalls::attach;

pub const USAGE: &str = "\
serve_load: paid calls against the real `tollgate serve` binary from outside (issue 17).
Settings (environment):
  TOLLGATE_LOAD_MODE=after|deferred      settlement mode of the route (default after)
  TOLLGATE_LOAD_IN_FLIGHT=N              calls in flight (default 16)
  TOLLGATE_LOAD_CALLS=N                  measured calls (default 500; with a duration: the
                                         pre-signed pool, default 1000 per second)
  TOLLGATE_LOAD_DURATION_S=S             run for S seconds instead of a count (the sustained row)
  TOLLGATE_LOAD_WARMUP=N                 warm-up calls, answered and drained first (default 20)
  TOLLGATE_LOAD_ENGINE=sqlite|postgres   ledger engine (default sqlite; postgres: a fresh
                                         database on TOLLGATE_TEST_PG_URL, default
                                         postgres://postgres@127.0.0.1:5432/postgres)
  TOLLGATE_LOAD_RECEIPT_POLL_MS=MS       settlement.receipt_poll_interval_ms (default: the
                                         gateway's own default)
  TOLLGATE_LOAD_BLOCK_TIME_S=S           0 = anvil automines (default), else a block every S s
  TOLLGATE_LOAD_CONFIG=t.k=v,...         more gateway settings, e.g.
                                         database.sqlite_durability=normal
  TOLLGATE_LOAD_SYSCALLS=perf|strace|off how fsyncs are counted (default perf: tracepoints,
                                         no ptrace stops; strace stops the gateway on every
                                         syscall and slows it)
  TOLLGATE_LOAD_DRAIN_MAX_S=S            longest wait for the drain (default 300)";

const API_KEY: &str = "sk-load-upstream-5d1f0b";
const PRICE_ATOMIC: u64 = 1_000;
const PAYERS: usize = 4;
/// 1,000,000 USDC (6 decimals) per payer: far more than any run spends.
const MINT_ATOMIC: u64 = 1_000_000_000_000;
/// Authorizations stay valid for two hours: longer than any run and its drain.
const VALIDITY_S: u64 = 7_200;
const DIRECT_CALLS_MAX: usize = 5_000;
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    After,
    Deferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscalls {
    Perf,
    Strace,
    Off,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::After => "after",
            Mode::Deferred => "deferred",
        }
    }
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl Syscalls {
    fn name(self) -> &'static str {
        match self {
            Syscalls::Perf => "perf",
            Syscalls::Strace => "strace",
            Syscalls::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub in_flight: usize,
    pub calls: usize,
    pub duration: Option<Duration>,
    pub warmup: usize,
    pub engine: Engine,
    pub receipt_poll_ms: Option<u64>,
    pub block_time_s: u64,
    /// Extra gateway settings: (table, key, value).
    pub config: Vec<(String, String, TomlValue)>,
    pub syscalls: Syscalls,
    pub drain_max: Duration,
}

impl Settings {
    /// The settings from `env` (a variable's value by name); defaults match the rows.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Settings> {
        let num = |name: &str, default: u64| -> anyhow::Result<u64> {
            match env(name) {
                Some(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a whole number")),
                None => Ok(default),
            }
        };
        let mode = match env("TOLLGATE_LOAD_MODE").as_deref() {
            None | Some("after") => Mode::After,
            Some("deferred") => Mode::Deferred,
            Some(other) => bail!("TOLLGATE_LOAD_MODE={other:?}: after or deferred"),
        };
        let engine = match env("TOLLGATE_LOAD_ENGINE").as_deref() {
            None | Some("sqlite") => Engine::Sqlite,
            Some("postgres") => Engine::Postgres,
            Some(other) => bail!("TOLLGATE_LOAD_ENGINE={other:?}: sqlite or postgres"),
        };
        let syscalls = match env("TOLLGATE_LOAD_SYSCALLS").as_deref() {
            None | Some("perf") => Syscalls::Perf,
            Some("strace") => Syscalls::Strace,
            Some("off") => Syscalls::Off,
            Some(other) => bail!("TOLLGATE_LOAD_SYSCALLS={other:?}: perf, strace or off"),
        };
        let duration = env("TOLLGATE_LOAD_DURATION_S").map(|_| num("TOLLGATE_LOAD_DURATION_S", 0)).transpose()?;
        let default_calls = duration.map_or(500, |s| s.saturating_mul(1_000));
        let mut config = Vec::new();
        for item in env("TOLLGATE_LOAD_CONFIG").unwrap_or_default().split(',').filter(|s| !s.trim().is_empty()) {
            let (path, value) = item.split_once('=').with_context(|| format!("TOLLGATE_LOAD_CONFIG: {item:?}"))?;
            let (table, key) =
                path.trim().rsplit_once('.').with_context(|| format!("TOLLGATE_LOAD_CONFIG: {path:?} is not t.k"))?;
            let value = value.trim();
            // Numbers and booleans as they are, anything else as a string.
            let value = if value.parse::<i128>().is_ok() || value == "true" || value == "false" {
                TomlValue::Raw(value.to_owned())
            } else {
                TomlValue::Str(value.trim_matches('"').to_owned())
            };
            config.push((table.to_owned(), key.to_owned(), value));
        }
        let s = Settings {
            mode,
            in_flight: usize::try_from(num("TOLLGATE_LOAD_IN_FLIGHT", 16)?)?,
            calls: usize::try_from(num("TOLLGATE_LOAD_CALLS", default_calls)?)?,
            duration: duration.map(Duration::from_secs),
            warmup: usize::try_from(num("TOLLGATE_LOAD_WARMUP", 20)?)?,
            engine,
            receipt_poll_ms: env("TOLLGATE_LOAD_RECEIPT_POLL_MS")
                .map(|_| num("TOLLGATE_LOAD_RECEIPT_POLL_MS", 0))
                .transpose()?,
            block_time_s: num("TOLLGATE_LOAD_BLOCK_TIME_S", 0)?,
            config,
            syscalls,
            drain_max: Duration::from_secs(num("TOLLGATE_LOAD_DRAIN_MAX_S", 300)?),
        };
        ensure!(s.in_flight > 0 && s.calls > 0, "TOLLGATE_LOAD_IN_FLIGHT and TOLLGATE_LOAD_CALLS must be at least 1");
        Ok(s)
    }

    fn describe(&self) -> String {
        let extra: Vec<String> = self
            .config
            .iter()
            .map(|(t, k, v)| match v {
                TomlValue::Str(s) | TomlValue::Raw(s) => format!("{t}.{k}={s}"),
                other => format!("{t}.{k}={other:?}"),
            })
            .collect();
        format!(
            "mode={} in_flight={} calls={} duration_s={} warmup={} engine={} receipt_poll_ms={} block_time_s={} \
             config=[{}] syscalls={}",
            self.mode.name(),
            self.in_flight,
            self.calls,
            self.duration.map_or("-".to_owned(), |d| d.as_secs().to_string()),
            self.warmup,
            self.engine.name(),
            self.receipt_poll_ms.map_or("default".to_owned(), |ms| ms.to_string()),
            self.block_time_s,
            extra.join(","),
            self.syscalls.name(),
        )
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews every number).
pub use tollgate_test_support::loadavg;

// ---------------------------------------------------------------------------------------
// The stack: anvil, upstream, database, `tollgate serve`.

struct Stack {
    chain: TestChain,
    gateway: TestGateway,
    url: String,
    admin_url: String,
    admin_token: String,
    db_url: String,
    pg: Option<PgDatabase>,
    payee: Address,
    payers: Vec<PrivateKeySigner>,
    upstream_url: String,
    dir: tempfile::TempDir,
}

async fn upstream(headers: HeaderMap) -> Response {
    let bearer = format!("Bearer {API_KEY}");
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    axum::Json(json!({ "temp_c": 21, "conditions": "clear" })).into_response()
}

/// A bare upstream (no recording: `direct` measures an upstream that does nothing).
async fn start_upstream() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(upstream)).await });
    Ok(url)
}

impl Stack {
    async fn start(s: &Settings, bin: &str) -> anyhow::Result<Stack> {
        let chain = TestChain::start(Deployment::BaseUsdc).await?;
        let payee = random_key().address();
        let mut payers = Vec::with_capacity(PAYERS);
        for _ in 0..PAYERS {
            payers.push(chain.funded_payer(MINT_ATOMIC).await?);
        }
        let upstream_url = start_upstream().await?;
        let dir = tempfile::tempdir()?;
        let pg = match s.engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(PgDatabase::create("serve_load").await.context("PostgreSQL is skipped here")?),
        };
        let db_url = pg.as_ref().map_or_else(|| sqlite_url(dir.path()), |db| db.url.clone());
        let mode = s.mode.name();
        let mut config = ConfigBuilder::new()
            .admin_listen()
            .database(&db_url)
            .relayer_env("LOAD_RELAYER_KEY")
            .network(NetworkConfig::base(&chain.anvil.url))
            .provider(
                ProviderConfig::new("weather", payee, &upstream_url)
                    .credential_header("LOAD_API_KEY")
                    .route(RouteConfig::new("/weather/{city}", PRICE_ATOMIC).settlement(mode)),
            );
        if let Some(ms) = s.receipt_poll_ms {
            config = config.set("settlement", "receipt_poll_interval_ms", ms);
        }
        for (table, key, value) in &s.config {
            config = config.set(table, key, value.clone());
        }
        let config_path = dir.path().join("tollgate.toml");
        config.write(&config_path)?;
        let env =
            [("LOAD_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("LOAD_API_KEY", API_KEY.to_owned())];
        let admin_token = bootstrap(bin, &config_path, &env).await?;
        let gateway = TestGateway::binary(bin, &config_path, &env, dir.path().join("logs")).await?;
        let url = gateway.url().to_owned();
        let admin_url = gateway.admin_url().context("no admin listener line")?.to_owned();
        Ok(Stack { chain, gateway, url, admin_url, admin_token, db_url, pg, payee, payers, upstream_url, dir })
    }

    async fn offer(&self, http: &reqwest::Client) -> anyhow::Result<v2::PaymentRequirements> {
        let resp = http.get(format!("{}/weather/probe", self.url)).send().await?;
        ensure!(resp.status() == StatusCode::PAYMENT_REQUIRED, "GET without payment: {}", resp.status());
        let raw = resp.headers().get("payment-required").context("no PAYMENT-REQUIRED header")?.as_bytes().to_vec();
        let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX)?;
        challenge.accepts.into_iter().next().context("no offer in the 402")
    }

    /// The gateway's RPC calls so far, by method (`tollgate_rpc_calls_total`).
    async fn rpc_calls(&self, http: &reqwest::Client) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = http
            .get(format!("{}/metrics", self.admin_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut calls = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("tollgate_rpc_calls_total{")) {
            let method = line.split("method=\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or("?");
            let n: f64 = line.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0.0);
            *calls.entry(method.to_owned()).or_insert(0) += n as u64;
        }
        ensure!(!calls.is_empty(), "no tollgate_rpc_calls_total in /metrics");
        Ok(calls)
    }

    /// PostgreSQL's WAL syncs and writes so far (the whole server's: `pg_stat_wal`).
    async fn pg_wal_syncs(&self) -> anyhow::Result<Option<(i64, i64)>> {
        let Some(db) = &self.pg else { return Ok(None) };
        let mut conn = sqlx::PgConnection::connect(&db.url).await?;
        let row: (i64, i64) =
            sqlx::query_as("SELECT wal_sync, wal_write FROM pg_stat_wal").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok(Some(row))
    }

    async fn relayer_nonce(&self) -> anyhow::Result<u64> {
        Ok(self.chain.provider.get_transaction_count(anvil_key(9).address()).await?)
    }
}

/// `tollgate admin bootstrap`: the operator token that reads `/metrics`.
async fn bootstrap(bin: &str, config: &Path, env: &[(&str, String)]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin)
        .args(["admin", "bootstrap", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await?;
    ensure!(out.status.success(), "admin bootstrap: {}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(created["token"].as_str().context("no token in the bootstrap output")?.to_owned())
}

// ---------------------------------------------------------------------------------------
// Calls and the load generator.

struct Call {
    url: String,
    header: (&'static str, String),
    /// The authorization, for the chain check (direct calls: none).
    payer: Address,
    nonce: B256,
}

/// What the client was told.
struct Answer {
    call: usize,
    status: u16,
    receipt: Option<String>,
    tx_hash: Option<B256>,
}

struct Run {
    latency_us: Histogram<u64>,
    wall: Duration,
    answers: Vec<Answer>,
}

/// `n` calls paid by the payers in turn, signed on every core before anything is timed.
async fn sign_calls(stack: &Stack, offer: &v2::PaymentRequirements, now: u64, n: usize) -> Vec<Call> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let mut handles = Vec::new();
    for start in (0..n).step_by(chunk) {
        let (offer, payers, url) = (offer.clone(), stack.payers.clone(), stack.url.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            (start..(start + chunk).min(n))
                .map(|i| {
                    let payer = &payers[i % payers.len()];
                    let mut b = PaymentBuilder::new(&offer, payer, now);
                    b.valid_before = now + VALIDITY_S;
                    Call {
                        url: format!("{url}/weather/city{i}"),
                        header: ("payment-signature", v2_header(&b)),
                        payer: b.from,
                        nonce: b.nonce,
                    }
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut calls = Vec::with_capacity(n);
    for h in handles {
        calls.extend(h.await.expect("signing thread"));
    }
    calls
}

/// Runs `calls` with `in_flight` at a time over one keep-alive client, until they run out
/// or `until` passes; never stops on an error answer (the chain check judges them).
async fn run_calls(
    http: &reqwest::Client,
    calls: Arc<Vec<Call>>,
    in_flight: usize,
    until: Option<Duration>,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (http, calls, next) = (http.clone(), calls.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new(3)?;
            let mut answers = Vec::new();
            loop {
                if until.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = calls.get(i) else { break };
                let t = Instant::now();
                let resp = http
                    .get(&call.url)
                    .header(call.header.0, &call.header.1)
                    .send()
                    .await
                    .with_context(|| format!("GET {}", call.url))?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                resp.bytes().await.with_context(|| format!("GET {} body", call.url))?;
                latency_us.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
                let receipt = headers.get("tollgate-receipt").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let tx_hash = headers.get("payment-response").and_then(|v| settlement_tx(v.as_bytes()));
                answers.push(Answer { call: i, status, receipt, tx_hash });
            }
            Ok::<_, anyhow::Error>((latency_us, answers))
        }));
    }
    let mut latency_us = Histogram::<u64>::new(3)?;
    let mut answers = Vec::with_capacity(calls.len());
    for w in workers {
        let (h, a) = w.await??;
        latency_us.add(h)?;
        answers.extend(a);
    }
    Ok(Run { latency_us, wall: started.elapsed(), answers })
}

/// The transaction in an x402 settlement response header.
fn settlement_tx(raw: &[u8]) -> Option<B256> {
    let v: serde_json::Value = decode_header(raw, PAYMENT_HEADER_BYTES_MAX).ok()?;
    v.get("transaction")?.as_str()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The run.

/// Every measure of one run, printed by [`Report::print`].
pub struct Report {
    settings: String,
    loadavg_start: String,
    loadavg_end: String,
    commit: String,
    calls: usize,
    wall: Duration,
    latency_us: Histogram<u64>,
    direct_p50_us: u64,
    non_2xx: BTreeMap<u16, usize>,
    fsyncs: Result<u64, String>,
    fsync_tool: Syscalls,
    pg_wal: Option<(i64, i64)>,
    rpc: BTreeMap<String, u64>,
    drain: Option<Duration>,
    settled_in_drain: u64,
    unfinished_after_drain: u64,
    check: ChainCheck,
}

/// The chain check: every 2xx answer against the ledger and the chain.
#[derive(Default)]
pub struct ChainCheck {
    paid_2xx: usize,
    settled: usize,
    /// 2xx answers whose entry was not yet terminal when the drain gave up.
    pending: usize,
    /// Violations, each said in a sentence.
    problems: Vec<String>,
    distinct_txs: usize,
    relayer_txs: u64,
    gas_used: u128,
}

impl Report {
    /// Whether the chain check found nothing wrong (every 2xx settled exactly once).
    pub fn chain_ok(&self) -> bool {
        self.check.problems.is_empty() && self.check.pending == 0
    }

    /// How many measured calls were answered.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn print(&self) {
        let per_call = |n: f64| n / self.calls.max(1) as f64;
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1_000.0;
        println!("settings: {}", self.settings);
        println!("commit={} loadavg_start={} loadavg_end={}", self.commit, self.loadavg_start, self.loadavg_end);
        println!(
            "calls={} wall_s={:.2} calls_per_s={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            self.calls,
            self.wall.as_secs_f64(),
            self.calls as f64 / self.wall.as_secs_f64(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.latency_us.max() as f64 / 1_000.0,
        );
        println!(
            "direct_p50_ms={:.3} p50_over_direct_ms={:.3}",
            self.direct_p50_us as f64 / 1_000.0,
            ms(0.5) - self.direct_p50_us as f64 / 1_000.0
        );
        if !self.non_2xx.is_empty() {
            println!("non_2xx_answers={:?}", self.non_2xx);
        }
        match &self.fsyncs {
            Ok(n) => println!(
                "gateway_fsyncs_per_call={:.2} (fsync+fdatasync of the gateway process, {}, measured window incl. drain)",
                per_call(*n as f64),
                self.fsync_tool.name()
            ),
            Err(why) => println!("gateway_fsyncs_per_call=unavailable: {why}"),
        }
        if let Some((sync, write)) = self.pg_wal {
            println!(
                "postgres_wal_syncs_per_call={:.2} postgres_wal_writes_per_call={:.2} (pg_stat_wal: the whole server)",
                per_call(sync as f64),
                per_call(write as f64)
            );
        }
        let total: u64 = self.rpc.values().sum();
        let by_method: Vec<String> =
            self.rpc.iter().filter(|(_, n)| **n > 0).map(|(m, n)| format!("{m}={:.2}", per_call(*n as f64))).collect();
        println!("rpc_calls_per_call={:.2} ({})", per_call(total as f64), by_method.join(" "));
        let c = &self.check;
        let gas = if c.settled > 0 { (c.gas_used / c.settled as u128).to_string() } else { "-".to_owned() };
        println!("gas_per_settled_call={gas} distinct_txs={} relayer_txs={}", c.distinct_txs, c.relayer_txs);
        match self.drain {
            Some(d) => println!(
                "drain_s={:.3} settled_in_drain={} settled_per_s_in_drain={:.1} (from the last answer until every entry is terminal)",
                d.as_secs_f64(),
                self.settled_in_drain,
                if d.as_secs_f64() > 0.0 { self.settled_in_drain as f64 / d.as_secs_f64() } else { 0.0 }
            ),
            None => println!("drain_s=unfinished: {} entries not terminal at the limit", self.unfinished_after_drain),
        }
        let verdict = if !c.problems.is_empty() {
            "FAILED"
        } else if c.pending > 0 {
            "incomplete"
        } else {
            "ok"
        };
        println!(
            "chain_check={verdict} paid_2xx={} settled_once={} pending={} (warm-up included)",
            c.paid_2xx, c.settled, c.pending
        );
        for p in c.problems.iter().take(20) {
            println!("  problem: {p}");
        }
    }
}

/// Builds the stack, runs warm-up, direct and measured calls, drains, and checks the chain.
pub async fn run(s: &Settings, bin: &str) -> anyhow::Result<Report> {
    let loadavg_start = loadavg();
    let stack = Stack::start(s, bin).await?;
    let http = tollgate_test_support::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(120))
        .build()?;
    let offer = stack.offer(&http).await?;
    let now = stack.chain.latest_timestamp().await?.max(unix_now());
    let signing = Instant::now();
    let mut all = sign_calls(&stack, &offer, now, s.warmup + s.calls).await;
    let measured = Arc::new(all.split_off(s.warmup));
    let warmup = Arc::new(all);
    eprintln!("signed {} payments in {:.1} s", warmup.len() + measured.len(), signing.elapsed().as_secs_f64());
    let relayer_start = stack.relayer_nonce().await?;
    let ledger = Ledger::connect(&stack.db_url, LedgerOptions::default()).await?;

    // The upstream alone, for the overhead.
    let direct_n = s.calls.min(DIRECT_CALLS_MAX);
    let direct: Vec<Call> = (0..direct_n)
        .map(|i| Call {
            url: format!("{}/weather/city{i}", stack.upstream_url),
            header: ("authorization", format!("Bearer {API_KEY}")),
            payer: Address::ZERO,
            nonce: B256::ZERO,
        })
        .collect();
    let direct = run_calls(&http, Arc::new(direct), s.in_flight, None).await?;
    ensure!(direct.answers.iter().all(|a| a.status == 200), "the upstream refused a direct call");

    if s.block_time_s > 0 {
        stack.chain.rpc("evm_setIntervalMining", json!([s.block_time_s])).await?;
    }
    let warm = run_calls(&http, warmup.clone(), s.in_flight, None).await.context("warm-up")?;
    let (warm_drained, _, _) = drain(&ledger, s.drain_max).await?;
    ensure!(warm_drained.is_some(), "the warm-up did not drain within {:?}", s.drain_max);

    // The window: from the first measured call to the end of the drain.
    let rpc_before = stack.rpc_calls(&http).await?;
    let wal_before = stack.pg_wal_syncs().await?;
    let pid = stack.gateway.pid().context("the gateway is not running")?;
    let probe = attach(s.syscalls, pid, stack.dir.path()).await;
    let run = run_calls(&http, measured.clone(), s.in_flight, s.duration).await.context("measured calls")?;
    let (drained, settled_in_drain, unfinished) = drain(&ledger, s.drain_max).await?;
    let fsyncs = match probe {
        Ok(p) => p.finish().await,
        Err(why) => Err(why),
    };
    let wal_after = stack.pg_wal_syncs().await?;
    let rpc_after = stack.rpc_calls(&http).await?;
    let rpc = rpc_after.iter().map(|(m, n)| (m.clone(), n - rpc_before.get(m).copied().unwrap_or(0))).collect();

    let mut non_2xx = BTreeMap::new();
    for a in &run.answers {
        if !(200..300).contains(&a.status) {
            *non_2xx.entry(a.status).or_insert(0) += 1;
        }
    }
    let mut check = chain_check(&stack, &ledger, &[(&warmup, &warm.answers), (&measured, &run.answers)]).await?;
    check.relayer_txs = stack.relayer_nonce().await? - relayer_start;
    // With entries still pending, a transaction may be sent and not yet recorded.
    if check.pending == 0 && check.relayer_txs != check.distinct_txs as u64 {
        check.problems.push(format!(
            "the relayer sent {} transactions, the ledger records {}",
            check.relayer_txs, check.distinct_txs
        ));
    }
    ledger.close().await;

    let report = Report {
        settings: s.describe(),
        loadavg_start,
        loadavg_end: loadavg(),
        commit: commit(),
        calls: run.answers.len(),
        wall: run.wall,
        latency_us: run.latency_us,
        direct_p50_us: direct.latency_us.value_at_quantile(0.5),
        non_2xx,
        fsyncs,
        fsync_tool: s.syscalls,
        pg_wal: wal_before.zip(wal_after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
        rpc,
        drain: drained,
        settled_in_drain,
        unfinished_after_drain: unfinished,
        check,
    };
    let mut stack = stack;
    stack.gateway.terminate(Duration::from_secs(10)).await?;
    if let Some(db) = stack.pg.take() {
        db.drop_now().await;
    }
    Ok(report)
}
