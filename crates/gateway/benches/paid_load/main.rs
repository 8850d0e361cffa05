//! Paid calls under load: latency and throughput of the same tiny upstream called
//! `direct`ly (with its key), through the gateway in settlement mode `after` (full
//! verification with RPC checks, then a real on-chain settlement per call before the
//! response), and in mode `deferred` (signature plus cached balance, respond, settle in
//! the background). Everything is real: an anvil node (automine) with the token at Base's
//! USDC address, an axum upstream demanding `Authorization: Bearer <key>`, one gateway on
//! SQLite in a temporary directory, all on 127.0.0.1 port 0. The stack comes from the test
//! kit (`ConfigBuilder`, `TestGateway`, `TestChain`), except the upstream: it stays a bare
//! axum route so `direct` keeps measuring an upstream that records nothing (the kit's
//! `MockUpstream` keeps every request), as the numbers in BENCHMARKS.md always have.
//!
//! Per pass (concurrency C, then C = 1): each mode runs a warm-up of 20 requests, then N
//! measured requests with C in flight over a keep-alive client; every response must be 200.
//! Deferred runs twice: `deferred` on the automining chain and `deferred_blocks_1s` with anvil
//! mining a block every second (`evm_setIntervalMining`, automine restored afterwards), so
//! the settlement worker's receipt waits overlap the calls as on a real chain; each prints
//! `<mode>_p50_overhead_ms` and `<mode>_settle_drain_s`.
//! After each deferred run the bench waits (at most 60 s) for the ledger to settle every
//! deferred entry and checks the payee's on-chain balance against the calls served.
//! Finally it times phases one at a time through the gateway's public APIs to show where
//! the time goes: the whole handler in process; the deferred path's decode, signature
//! check, pending spend, reserve, forward and ledger transition (with the settlement worker
//! idle, and the ledger calls again while it drains a backlog); and after mode's full
//! verification, settlement broadcast and receipt wait. Last, `direct` and the two deferred
//! passes run once more at 1 in flight with every anvil thread reniced to 19
//! (`*_chain_nice19`): the chain node then yields the cores to the gateway, as a chain on
//! another machine does; an automining anvil otherwise mines one block per settlement on the
//! gateway's own two cores. Target: deferred p50 at most 2 ms over direct p50.
//!
//! `TOLLGATE_BENCH_REQUESTS` (default 500) and `TOLLGATE_BENCH_CONCURRENCY` (default 8)
//! override N and C; `TOLLGATE_BENCH_SQLITE_DURABILITY=normal` runs the ledger without a
//! disk sync per commit (`database.sqlite_durability`). Run with `cargo bench -p tollgate-gateway --bench paid_load`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use anyhow::{Context, bail, ensure};
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_gateway::Gateway;
use tollgate_gateway::proxy::{self, Target};
use tollgate_metering::{AtomicAmount, EntryId, EntryState, NewEntry, SettlementMode, SpendQuery, Transition};
use tollgate_test_support::{
    ConfigBuilder, Deployment, NetworkConfig, PaymentBuilder, ProviderConfig, RouteConfig, TestChain, TestGateway,
    anvil_key, random_key, sqlite_url, v2_header,
};
use tollgate_verifier::{CallOutcome, Clock, SettleOutcome, SystemClock};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, PaymentPayload, decode_header, find_offer, v2};
use tower::ServiceExt;

const API_KEY: &str = "sk-bench-upstream-3c9e1a7f5b";
const BEARER: &str = "Bearer sk-bench-upstream-3c9e1a7f5b";
const PRICE_ATOMIC: u64 = 1_000;
const CHAIN_ID: u64 = 8453;
const WARMUP: usize = 20;
const PAYERS: usize = 4;
/// 1,000,000 USDC (6 decimals) per payer: far more than any run spends.
const MINT_ATOMIC: u64 = 1_000_000_000_000;
/// Authorizations stay valid for an hour: longer than any run.
const VALIDITY_S: u64 = 3_600;
const DRAIN_MAX: Duration = Duration::from_secs(60);
const PROBE_SAMPLES: usize = 200;
/// Deferred calls queued for the worker while the ledger is probed under settlement load.
const BACKLOG: usize = 400;
const AFTER_PROVIDER: &str = "weather-after";
const DEFERRED_PROVIDER: &str = "weather-deferred";

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    // The default multi-thread runtime: one worker per core (2 on the bench machine), shared
    // by the load generator, the gateway and the upstream. anvil runs as its own process.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_bench(settings))
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    requests: usize,
    concurrency: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        Ok(Settings {
            requests: env_count("TOLLGATE_BENCH_REQUESTS", 500)?,
            concurrency: env_count("TOLLGATE_BENCH_CONCURRENCY", 8)?,
        })
    }

    /// The configured concurrency, then 1 (latency without queueing) unless it already is 1.
    fn passes(&self) -> Vec<usize> {
        if self.concurrency == 1 { vec![1] } else { vec![self.concurrency, 1] }
    }
}

fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => {
            let n: usize = v.trim().parse().with_context(|| format!("{name}={v:?} is not a whole number"))?;
            ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        }
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => bail!("{name}: {e}"),
    }
}

async fn run_bench(s: Settings) -> anyhow::Result<()> {
    println!(
        "machine: cores={} loadavg_at_start={}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg()
    );
    let stack = Stack::start(s).await?;
    let http = tollgate_test_support::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(30))
        .build()?;

    // Everything is signed before anything is measured.
    let signing = Instant::now();
    let after_offer = stack.offer(&http, "/after/weather/probe").await?;
    let deferred_offer = stack.offer(&http, "/deferred/weather/probe").await?;
    let now = SystemClock.now_unix_s().max(stack.chain.latest_timestamp().await?);
    let per_mode = WARMUP + s.requests;
    let mut plans = Vec::new();
    for c in s.passes() {
        plans.push(PassPlan {
            concurrency: c,
            direct: stack.direct_calls(per_mode),
            after: stack.paid_calls("/after/weather", &after_offer, now, per_mode),
            deferred: stack.paid_calls("/deferred/weather", &deferred_offer, now, per_mode),
            deferred_blocks: stack.paid_calls("/deferred/weather", &deferred_offer, now, per_mode),
        });
    }
    let niced = PassPlan {
        concurrency: 1,
        direct: stack.direct_calls(per_mode),
        after: Vec::new(),
        deferred: stack.paid_calls("/deferred/weather", &deferred_offer, now, per_mode),
        deferred_blocks: stack.paid_calls("/deferred/weather", &deferred_offer, now, per_mode),
    };
    let probe_payer = random_key();
    let probes = ProbeSet {
        handler: sign_many(&stack.payers, &deferred_offer, now, PROBE_SAMPLES),
        idle: sign_many(std::slice::from_ref(&probe_payer), &deferred_offer, now, PROBE_SAMPLES),
        busy: sign_many(std::slice::from_ref(&probe_payer), &deferred_offer, now, PROBE_SAMPLES),
        backlog: stack.paid_calls("/deferred/weather", &deferred_offer, now, BACKLOG),
        verify_full: sign_many(&stack.payers, &after_offer, now, PROBE_SAMPLES),
    };
    println!(
        "setup: {PAYERS} payers, {} authorizations signed in {:.2} s, price_atomic={PRICE_ATOMIC}, warmup={WARMUP} per mode",
        (plans.len() * 3 + 2) * per_mode + 4 * PROBE_SAMPLES + BACKLOG,
        signing.elapsed().as_secs_f64()
    );

    let mut paid_ok: u64 = 0;
    let mut expected: u64 = 0;
    for plan in plans {
        let c = plan.concurrency;
        let direct = measure(&http, "direct", plan.direct, c).await?;
        let after = measure(&http, "after", plan.after, c).await?;
        paid_ok += (WARMUP + after.samples.len()) as u64;
        if after.settlement_pending > 0 {
            println!("anomaly: {} after-mode responses had a pending settlement", after.settlement_pending);
        }

        let deferred_runs = stack
            .deferred_pair(
                &http,
                ["deferred", "deferred_blocks_1s"],
                plan.deferred,
                plan.deferred_blocks,
                c,
                &mut expected,
            )
            .await?;
        paid_ok += deferred_runs.iter().map(|(m, _)| (WARMUP + m.samples.len()) as u64).sum::<u64>();

        for m in [&direct, &after].into_iter().chain(deferred_runs.iter().map(|(m, _)| m)) {
            m.print();
        }
        print_overheads(&direct, &deferred_runs, c);
        stack.check_onchain(paid_ok).await?;
    }

    // Where the deferred overhead goes: the whole handler in process, then each phase alone
    // with the settlement worker idle, then the ledger phases while it drains a backlog.
    let mut phases = vec![stack.probe_handler(&probes.handler).await?];
    paid_ok += PROBE_SAMPLES as u64;
    expected += PROBE_SAMPLES as u64;
    stack.wait_deferred_settled(expected).await.context("in-process handler probe settlement")?;
    let (idle, mut probe_ids) = stack.probe_phases(&http, &probes, &deferred_offer, &after_offer).await?;
    paid_ok += PROBE_SAMPLES as u64;
    let idle_sum_us: f64 = idle.iter().filter(|p| p.in_deferred_path).map(|p| p.p50_us()).sum();
    phases.extend(idle);

    run_calls(&http, Arc::new(probes.backlog), s.concurrency).await.context("backlog for the busy probe")?;
    paid_ok += BACKLOG as u64;
    expected += BACKLOG as u64;
    let (busy, ids) = stack.probe_ledger(&probes.busy, "_during_drain").await?;
    let (_, still_pending) = stack.deferred_counts().await?;
    let busy_sum_us: f64 = busy.iter().filter(|p| p.in_deferred_path).map(|p| p.p50_us()).sum();
    phases.extend(busy);
    probe_ids.extend(ids);
    stack.wait_deferred_settled(expected).await.context("backlog settlement")?;
    stack.void_probe_entries(&probe_ids).await?;

    for p in &phases {
        p.print();
    }
    println!(
        "phase_sum_p50_ms={:.3} (decode..forward_upstream, one at a time, worker idle; the forwarded mark is written beside the response)",
        idle_sum_us / 1_000.0
    );
    println!(
        "ledger_sum_during_drain_p50_ms={:.3} (pending_spend + reserve; {still_pending} settlements still queued when the probe ended)",
        busy_sum_us / 1_000.0
    );
    stack.check_onchain(paid_ok).await?;

    // Last (the chain's priority is only ever lowered): the 1-in-flight deferred passes again
    // with anvil at the lowest CPU priority, standing in for a chain node on another machine.
    // On 2 shared cores an automining anvil mines a block per settlement beside the calls;
    // in production that work is the chain's, not the gateway box's.
    let nice = stack.lower_chain_priority()?;
    println!("chain_nice={nice} (anvil reniced for the passes below)");
    let direct = measure(&http, "direct_chain_nice19", niced.direct, 1).await?;
    let runs = stack
        .deferred_pair(
            &http,
            ["deferred_chain_nice19", "deferred_blocks_1s_chain_nice19"],
            niced.deferred,
            niced.deferred_blocks,
            1,
            &mut expected,
        )
        .await?;
    paid_ok += runs.iter().map(|(m, _)| (WARMUP + m.samples.len()) as u64).sum::<u64>();
    direct.print();
    for (m, _) in &runs {
        m.print();
    }
    print_overheads(&direct, &runs, 1);
    stack.check_onchain(paid_ok).await?;
    println!("loadavg_at_end={}", loadavg());
    stack.stop().await;
    Ok(())
}

/// Each deferred run's p50 overhead over `direct`, then its drain line.
fn print_overheads(direct: &Measured, runs: &[(Measured, String)], c: usize) {
    for (m, drain) in runs {
        println!("{}_p50_overhead_ms={:.3} (target <= 2.0) concurrency={c}", m.mode, m.p50_ms() - direct.p50_ms());
        println!("{drain}");
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews every number).
use tollgate_test_support::loadavg;

/// Pre-signed material for the phase probes.
struct ProbeSet {
    /// Deferred payments by the load payers, for the in-process handler.
    handler: Vec<PaymentBuilder>,
    /// Payments by a payer of the probe's own, for the ledger phases with the worker idle.
    idle: Vec<PaymentBuilder>,
    /// The same, for the ledger phases while the worker drains a backlog.
    busy: Vec<PaymentBuilder>,
    /// Deferred HTTP calls that make that backlog.
    backlog: Vec<Call>,
    /// After-mode payments, verified in full and settled outside the ledger.
    verify_full: Vec<PaymentBuilder>,
}

/// Awaits `f(i)` for `i` in `0..n`, one at a time, timing each.
async fn timed<T, Fut>(n: usize, mut f: impl FnMut(usize) -> Fut) -> anyhow::Result<(Vec<Duration>, Vec<T>)>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut samples = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        out.push(f(i).await?);
        samples.push(t.elapsed());
    }
    Ok((samples, out))
}

mod probes;
mod stack;

use stack::Stack;

fn sign_many(payers: &[PrivateKeySigner], offer: &v2::PaymentRequirements, now: u64, n: usize) -> Vec<PaymentBuilder> {
    (0..n)
        .map(|i| {
            let mut b = PaymentBuilder::new(offer, &payers[i % payers.len()], now);
            b.valid_before = now + VALIDITY_S;
            b
        })
        .collect()
}

fn config(db_url: &str, rpc_url: &str, upstream_url: &str, payee: Address, queue: usize) -> ConfigBuilder {
    // `TOLLGATE_BENCH_SQLITE_DURABILITY=normal` measures SQLite without a sync per commit.
    let durability = std::env::var("TOLLGATE_BENCH_SQLITE_DURABILITY").unwrap_or_else(|_| "full".to_owned());
    let provider = |id: &str, prefix: &str, mode: &str| {
        ProviderConfig::new(id, payee, upstream_url)
            .strip_prefix(prefix)
            .credential_header("BENCH_API_KEY")
            .route(RouteConfig::new(&format!("{prefix}/weather/{{city}}"), PRICE_ATOMIC).settlement(mode))
    };
    ConfigBuilder::new()
        .public_url("http://gateway.test")
        .database(db_url)
        .set("database", "sqlite_durability", durability)
        .relayer_env("BENCH_RELAYER_KEY")
        .set("settlement", "receipt_poll_interval_ms", 5u64)
        .set("settlement", "receipt_timeout_ms", 10_000u64)
        .set("settlement", "recovery_interval_ms", 1000u64)
        .set("settlement", "recovery_grace_s", 3600u64)
        .set("settlement", "deferred_queue_capacity", queue)
        .network(NetworkConfig::base(rpc_url))
        .provider(provider(AFTER_PROVIDER, "/after", "after"))
        .provider(provider(DEFERRED_PROVIDER, "/deferred", "deferred"))
}

// ---------------------------------------------------------------------------------------
// The load generator.

struct Call {
    url: String,
    header: (&'static str, String),
}

struct PassPlan {
    concurrency: usize,
    direct: Vec<Call>,
    after: Vec<Call>,
    deferred: Vec<Call>,
    deferred_blocks: Vec<Call>,
}

fn split_warmup(mut calls: Vec<Call>) -> (Vec<Call>, Vec<Call>) {
    let measured = calls.split_off(WARMUP.min(calls.len()));
    (calls, measured)
}

struct RunResult {
    samples: Vec<Duration>,
    wall: Duration,
    settlement_pending: usize,
}

/// Runs `calls` with `concurrency` in flight; fails on the first non-200.
async fn run_calls(http: &reqwest::Client, calls: Arc<Vec<Call>>, concurrency: usize) -> anyhow::Result<RunResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (http, calls, next) = (http.clone(), calls.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut pending = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(call) = calls.get(i) else { break };
                let t = Instant::now();
                let resp = http
                    .get(&call.url)
                    .header(call.header.0, &call.header.1)
                    .send()
                    .await
                    .with_context(|| format!("GET {}", call.url))?;
                let status = resp.status();
                if resp.headers().get("tollgate-settlement").is_some_and(|v| v == "pending") {
                    pending += 1;
                }
                let body = resp.bytes().await.with_context(|| format!("GET {} body", call.url))?;
                samples.push(t.elapsed());
                if status != StatusCode::OK {
                    bail!("GET {} answered {status} (expected 200): {}", call.url, String::from_utf8_lossy(&body));
                }
            }
            Ok::<_, anyhow::Error>((samples, pending))
        }));
    }
    let mut samples = Vec::with_capacity(calls.len());
    let mut settlement_pending = 0;
    for w in workers {
        let (s, p) = w.await??;
        samples.extend(s);
        settlement_pending += p;
    }
    Ok(RunResult { samples, wall: started.elapsed(), settlement_pending })
}

/// Warm-up (not counted), then the measured run.
async fn measure(http: &reqwest::Client, mode: &'static str, calls: Vec<Call>, c: usize) -> anyhow::Result<Measured> {
    let (warm, measured) = split_warmup(calls);
    run_calls(http, Arc::new(warm), c).await.with_context(|| format!("{mode} warm-up"))?;
    let run = run_calls(http, Arc::new(measured), c).await.with_context(|| format!("mode {mode}"))?;
    Ok(Measured::from_run(mode, run, c))
}

struct Measured {
    mode: &'static str,
    concurrency: usize,
    samples: Vec<Duration>,
    wall: Duration,
    settlement_pending: usize,
}

impl Measured {
    fn from_run(mode: &'static str, mut run: RunResult, concurrency: usize) -> Measured {
        run.samples.sort_unstable();
        Measured { mode, concurrency, samples: run.samples, wall: run.wall, settlement_pending: run.settlement_pending }
    }

    fn ms(&self, p: f64) -> f64 {
        percentile(&self.samples, p).as_secs_f64() * 1_000.0
    }

    fn p50_ms(&self) -> f64 {
        self.ms(50.0)
    }

    fn print(&self) {
        println!(
            "mode={} requests={} concurrency={} calls_per_s={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            self.mode,
            self.samples.len(),
            self.concurrency,
            self.samples.len() as f64 / self.wall.as_secs_f64(),
            self.ms(50.0),
            self.ms(90.0),
            self.ms(99.0),
            self.ms(100.0),
        );
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One phase of the deferred path, timed alone.
struct Phase {
    name: String,
    /// Part of the sum that approximates the gateway's own work on a deferred call.
    in_deferred_path: bool,
    samples: Vec<Duration>,
    /// Printed after the numbers.
    note: String,
}

impl Phase {
    fn new(name: String, in_deferred_path: bool, mut samples: Vec<Duration>) -> Phase {
        samples.sort_unstable();
        Phase { name, in_deferred_path, samples, note: String::new() }
    }

    fn us(&self, p: f64) -> f64 {
        percentile(&self.samples, p).as_secs_f64() * 1_000_000.0
    }

    fn p50_us(&self) -> f64 {
        self.us(50.0)
    }

    fn print(&self) {
        println!(
            "phase={} samples={} p50_us={:.1} p90_us={:.1} p99_us={:.1}{}{}",
            self.name,
            self.samples.len(),
            self.us(50.0),
            self.us(90.0),
            self.us(99.0),
            if self.note.is_empty() { "" } else { " " },
            self.note
        );
    }
}
