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

// ---------------------------------------------------------------------------------------
// The stack: anvil, upstream, gateway.

struct Stack {
    chain: TestChain,
    gateway: Arc<Gateway>,
    gateway_url: String,
    upstream_url: String,
    payee: Address,
    payers: Vec<PrivateKeySigner>,
    servers: Vec<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    running: TestGateway,
    db_dir: tempfile::TempDir,
}

async fn weather(Path(city): Path<String>, headers: HeaderMap) -> Response {
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(BEARER) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    axum::Json(serde_json::json!({ "city": city, "temp_c": 21, "conditions": "clear" })).into_response()
}

fn spawn_server<F>(serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> (oneshot::Sender<()>, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    (tx, tokio::spawn(serve(rx)))
}

impl Stack {
    async fn start(s: Settings) -> anyhow::Result<Stack> {
        let chain = TestChain::start(Deployment::BaseUsdc).await?;

        let app = axum::Router::new().route("/weather/{city}", axum::routing::get(weather));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let upstream_url = format!("http://{}", listener.local_addr()?);
        let upstream = spawn_server(|rx| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });

        let db_dir = tempfile::tempdir()?;
        let payee = random_key().address();
        // Room for every deferred call of a run, so none waits for the backlog sweep.
        let queue = (WARMUP + s.requests).max(1024);
        let text = config(&sqlite_url(db_dir.path()), &chain.anvil.url, &upstream_url, payee, queue).build();
        let env =
            [("BENCH_RELAYER_KEY", format!("{:#x}", anvil_key(9).to_bytes())), ("BENCH_API_KEY", API_KEY.to_owned())];
        let running = TestGateway::start_paid(&text, &env, Arc::new(SystemClock)).await.context("gateway start")?;
        let gateway = running.gateway().clone();
        let gateway_url = running.url().to_owned();

        let mut payers: Vec<PrivateKeySigner> = Vec::with_capacity(PAYERS);
        for _ in 0..PAYERS {
            payers.push(chain.funded_payer(MINT_ATOMIC).await?);
        }
        Ok(Stack { chain, gateway, gateway_url, upstream_url, payee, payers, servers: vec![upstream], running, db_dir })
    }

    async fn stop(self) {
        for (tx, task) in self.servers {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.running.stop().await;
    }

    /// Our offer for `GET path`, from a real 402.
    async fn offer(&self, http: &reqwest::Client, path: &str) -> anyhow::Result<v2::PaymentRequirements> {
        let resp = http.get(format!("{}{path}", self.gateway_url)).send().await?;
        ensure!(resp.status() == StatusCode::PAYMENT_REQUIRED, "GET {path} without payment: {}", resp.status());
        let raw = resp.headers().get("payment-required").context("no PAYMENT-REQUIRED header")?.as_bytes().to_vec();
        let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX)?;
        challenge.accepts.into_iter().next().context("no offer in the 402")
    }

    fn direct_calls(&self, n: usize) -> Vec<Call> {
        (0..n)
            .map(|i| Call {
                url: format!("{}/weather/city{i}", self.upstream_url),
                header: ("authorization", BEARER.to_owned()),
            })
            .collect()
    }

    fn paid_calls(&self, prefix: &str, offer: &v2::PaymentRequirements, now: u64, n: usize) -> Vec<Call> {
        sign_many(&self.payers, offer, now, n)
            .into_iter()
            .enumerate()
            .map(|(i, b)| Call {
                url: format!("{}{prefix}/city{i}", self.gateway_url),
                header: ("payment-signature", v2_header(&b)),
            })
            .collect()
    }

    /// Counts of this provider's entries over all payers: (settled, pending).
    async fn deferred_counts(&self) -> anyhow::Result<(u64, u64)> {
        let (mut settled, mut pending) = (0, 0);
        for p in &self.payers {
            let q = SpendQuery {
                chain_id: CHAIN_ID,
                asset: self.chain.token,
                payer: p.address(),
                provider: Some(DEFERRED_PROVIDER.to_owned()),
                route: None,
                created_from_unix_s: None,
                created_before_unix_s: None,
            };
            let t = self.gateway.ledger.spend().totals(&q).await?;
            settled += t.settled.count;
            pending += t.pending.count + t.refund_owed.count;
        }
        Ok((settled, pending))
    }

    /// Waits until the ledger shows `expected` settled deferred entries and none pending.
    async fn wait_deferred_settled(&self, expected: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_MAX;
        loop {
            let (settled, pending) = self.deferred_counts().await?;
            if pending == 0 {
                ensure!(
                    settled == expected,
                    "deferred drain: {settled} entries settled, {expected} expected (the rest failed or were voided)"
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("deferred drain: {pending} entries still unsettled after {DRAIN_MAX:?} ({settled} settled)");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The two deferred passes: `modes[0]` on the automining chain, then `modes[1]` with anvil
    /// mining a block a second holding every pending transaction, as a real chain does,
    /// instead of one block per transaction (automine restored afterwards).
    async fn deferred_pair(
        &self,
        http: &reqwest::Client,
        modes: [&'static str; 2],
        automine: Vec<Call>,
        blocks: Vec<Call>,
        c: usize,
        expected: &mut u64,
    ) -> anyhow::Result<Vec<(Measured, String)>> {
        let first = self.measure_deferred(http, modes[0], automine, c, expected).await?;
        self.chain.rpc("evm_setIntervalMining", serde_json::json!([1])).await?;
        let second = self.measure_deferred(http, modes[1], blocks, c, expected).await;
        self.chain.rpc("evm_setAutomine", serde_json::json!([true])).await?;
        Ok(vec![first, second?])
    }

    /// Renices every thread of anvil to 19, one at a time (nice is per thread on Linux;
    /// threads it starts later inherit it; lowering a priority needs no privilege; a thread
    /// that exits meanwhile is skipped) and returns the lowest nice value the kernel then
    /// reports among the threads still there (19 when every one took it).
    fn lower_chain_priority(&self) -> anyhow::Result<i64> {
        let pid = self.chain.anvil.pid().context("anvil has exited")?;
        let tasks = || -> anyhow::Result<Vec<String>> {
            let mut ids = Vec::new();
            for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                ids.push(t?.file_name().to_string_lossy().into_owned());
            }
            Ok(ids)
        };
        let nice_of = |tid: &str| -> Option<i64> {
            // /proc/<pid>/task/<tid>/stat: nice is the 17th field after the parenthesised name.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
        };
        for tid in tasks()? {
            let out =
                std::process::Command::new("renice").args(["19", "-p", &tid]).output().context("running renice")?;
            ensure!(
                out.status.success() || nice_of(&tid).is_none(),
                "renice of thread {tid} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let least = tasks()?.iter().filter_map(|t| nice_of(t)).min().context("anvil has no threads left")?;
        Ok(least)
    }

    /// One deferred run: the warm-up's settlements finish first, so the measured run starts
    /// with an idle worker and the drain after it covers exactly the measured calls. Returns
    /// the measurement and a line on the drain.
    async fn measure_deferred(
        &self,
        http: &reqwest::Client,
        mode: &'static str,
        calls: Vec<Call>,
        c: usize,
        settled_expected: &mut u64,
    ) -> anyhow::Result<(Measured, String)> {
        let (warm, measured) = split_warmup(calls);
        run_calls(http, Arc::new(warm), c).await.with_context(|| format!("{mode} warm-up"))?;
        *settled_expected += WARMUP as u64;
        self.wait_deferred_settled(*settled_expected).await.with_context(|| format!("{mode} warm-up settlement"))?;
        let n = measured.len();
        let started = Instant::now();
        let run = Measured::from_run(mode, run_calls(http, Arc::new(measured), c).await?, c);
        let load_s = started.elapsed().as_secs_f64();
        *settled_expected += n as u64;
        self.wait_deferred_settled(*settled_expected).await.with_context(|| format!("{mode} settlement"))?;
        let total_s = started.elapsed().as_secs_f64();
        let drain = format!(
            "{mode}_settle_drain_s={:.2} concurrency={c} settled={n} load_s={load_s:.2} total_s={total_s:.2} settle_per_s={:.1}",
            total_s - load_s,
            n as f64 / total_s
        );
        Ok((run, drain))
    }

    async fn check_onchain(&self, paid_calls: u64) -> anyhow::Result<()> {
        let balance = self.chain.balance(self.payee).await?;
        let expected = U256::from(paid_calls) * U256::from(PRICE_ATOMIC);
        ensure!(
            balance == expected,
            "onchain_check=FAILED payee balance {balance}, expected {expected} ({paid_calls} paid calls)"
        );
        println!("onchain_check=ok payee_balance_atomic={balance} paid_calls={paid_calls}");
        Ok(())
    }

    /// The whole gateway handler for a deferred call, in process (no client TCP hop); the
    /// worker settles these calls meanwhile, as it does under load.
    async fn probe_handler(&self, payments: &[PaymentBuilder]) -> anyhow::Result<Phase> {
        let router = tollgate_gateway::router(self.gateway.clone());
        let requests = payments
            .iter()
            .enumerate()
            .map(|(i, b)| {
                axum::http::Request::get(format!("/deferred/weather/probe{i}"))
                    .header("payment-signature", v2_header(b))
                    .body(Body::empty())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut requests = requests.into_iter();
        let (samples, _) = timed(payments.len(), |_| {
            let (router, req) = (router.clone(), requests.next());
            async move {
                let resp = router.oneshot(req.context("request")?).await?;
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
                ensure!(
                    status == StatusCode::OK,
                    "in-process deferred call: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(())
            }
        })
        .await?;
        Ok(Phase::new("handler_in_process".to_owned(), false, samples))
    }

    /// The deferred path's phases, one at a time, through the gateway's public APIs, plus
    /// references (a primary-key read, a raw fsync, one eth_call, a full verification).
    async fn probe_phases(
        &self,
        http: &reqwest::Client,
        probes: &ProbeSet,
        offer: &v2::PaymentRequirements,
        after_offer: &v2::PaymentRequirements,
    ) -> anyhow::Result<(Vec<Phase>, Vec<EntryId>)> {
        let gw = &self.gateway;
        let offers = vec![offer.clone()];
        let headers: Vec<String> = probes.idle.iter().map(v2_header).collect();
        let n = headers.len();
        let mut out = Vec::new();

        let cap = gw.config.server.payment_header_bytes_max;
        let (samples, decoded) = timed(n, |i| {
            let (h, offers) = (&headers[i], &offers);
            async move {
                let p = PaymentPayload::from_header(h.as_bytes(), cap)?;
                find_offer(offers, &p).map_err(|e| anyhow::anyhow!("offer mismatch: {e:?}"))?;
                Ok(p)
            }
        })
        .await?;
        out.push(Phase::new("decode+find_offer".to_owned(), true, samples));

        let decoded = &decoded;
        let (samples, _) =
            timed(n, |i| async move { Ok(gw.verifier.verify_signature_only(offer, &decoded[i]).await?) }).await?;
        out.push(Phase::new("verify_signature_only".to_owned(), true, samples));

        let (ledger, ids) = self.probe_ledger(&probes.idle, "").await?;
        let mut ledger = ledger.into_iter();
        // In request order: pending spend (verify phase), reserve, forward, transition.
        out.extend(ledger.by_ref().take(3));

        let provider = self.provider(DEFERRED_PROVIDER)?;
        let route = provider.routes.first().context("deferred route")?;
        let mut agent_headers = HeaderMap::new();
        agent_headers.insert("payment-signature", HeaderValue::from_str(&headers[0])?);
        agent_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let (samples, _) = timed(n, |i| {
            let target = Target {
                url: proxy::upstream_url(
                    &provider.upstream,
                    &format!("/deferred/weather/probe{i}"),
                    provider.strip_prefix.as_deref(),
                    None,
                ),
                credential: provider.credential.as_ref().and_then(|c| match &c.secret {
                    tollgate_gateway::config::SecretSource::Static { secret, .. } => Some((&c.injection, secret)),
                    tollgate_gateway::config::SecretSource::Vault { .. } => None,
                }),
                timeout: route.upstream_timeout,
                response_bytes_max: gw.config.server.response_bytes_max,
                provider: &provider.id,
                base: &provider.upstream,
                strip_prefix: provider.strip_prefix.as_deref(),
                forwarded: None,
                allow_set_cookie: route.allow_set_cookie,
            };
            let agent_headers = &agent_headers;
            async move {
                let up = proxy::forward(&gw.http, target, Method::GET, agent_headers, bytes::Bytes::new(), true)
                    .await
                    .map_err(|e| anyhow::anyhow!("forward: {e}"))?;
                ensure!(up.status == StatusCode::OK, "forward probe: upstream said {}", up.status);
                Ok(())
            }
        })
        .await?;
        out.push(Phase::new("forward_upstream".to_owned(), true, samples));
        out.extend(ledger);

        let direct = self.direct_calls(n);
        let (samples, _) = timed(n, |i| {
            let c = &direct[i];
            async move {
                let resp = http.get(&c.url).header(c.header.0, &c.header.1).send().await?;
                let status = resp.status();
                resp.bytes().await?;
                ensure!(status == StatusCode::OK, "direct probe: {status}");
                Ok(())
            }
        })
        .await?;
        out.push(Phase::new("direct_call_for_reference".to_owned(), false, samples));

        let path = self.db_dir.path().join("fsync-probe");
        let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            let block = [7u8; 4096];
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                f.write_all(&block)?;
                f.sync_data()?;
                samples.push(t.elapsed());
            }
            std::fs::remove_file(&path)?;
            Ok(samples)
        })
        .await??;
        out.push(Phase::new("disk_write_fsync_4k".to_owned(), false, samples));

        let payer = self.payers[0].address();
        let token = self.chain.token;
        let (samples, _) =
            timed(n, |_| async move { Ok(gw.verifier.token_balance(CHAIN_ID, token, payer).await?) }).await?;
        out.push(Phase::new("rpc_eth_call_balance".to_owned(), false, samples));

        let full: Vec<PaymentPayload> = probes.verify_full.iter().map(|b| b.v2()).collect();
        let full = &full;
        let (samples, verified) =
            timed(n, |i| async move { Ok(gw.verifier.verify(after_offer, &full[i]).await?) }).await?;
        out.push(Phase::new("verify_full_after_mode".to_owned(), false, samples));

        // The settlement of after mode, without the ledger's claim and record around it:
        // these payments really settle (the caller counts them in the on-chain check).
        let settler = gw.settlers.get(&CHAIN_ID).context("no settler")?;
        let verified = &verified;
        let (chain, relayer) = (settler.chain(), settler.address());
        let (samples, _) = timed(n, |i| async move {
            let v = &verified[i];
            match chain.estimate_gas(relayer, v.asset, v.transfer_calldata()).await? {
                CallOutcome::Success(gas) => Ok(gas),
                CallOutcome::Reverted(_) => bail!("estimate_gas reverted for an unused authorization"),
            }
        })
        .await?;
        out.push(Phase::new("rpc_estimate_gas".to_owned(), false, samples));
        let (samples, _) = timed(n, |_| async move { Ok(chain.fees().await?) }).await?;
        out.push(Phase::new("rpc_fees".to_owned(), false, samples));
        let (samples, hashes) = timed(n, |i| async move { Ok(settler.submit(&verified[i]).await?) }).await?;
        let mut submit = Phase::new("settle_submit_after_mode".to_owned(), false, samples);
        submit.note = "estimate_gas+fees+sign+send_raw".to_owned();
        out.push(submit);
        let hashes = &hashes;
        let (samples, _) = timed(n, |i| async move {
            match settler.await_receipt(&verified[i], hashes[i]).await? {
                SettleOutcome::Settled(_) => Ok(()),
                SettleOutcome::Pending { tx_hash } => bail!("settlement {tx_hash} not mined in time"),
            }
        })
        .await?;
        let mut receipt = Phase::new("settle_await_receipt_after_mode".to_owned(), false, samples);
        receipt.note = format!("poll_ms={}", gw.config.settlement.receipt_poll_interval.as_millis());
        out.push(receipt);
        Ok((out, ids))
    }

    fn provider(&self, id: &str) -> anyhow::Result<&tollgate_gateway::config::ProviderConfig> {
        self.gateway.config.providers.iter().find(|p| p.id == id).with_context(|| format!("provider {id}"))
    }

    /// The ledger calls of a deferred request — pending spend, reserve, `reserved →
    /// forwarded` — plus a primary-key read for reference, for the payments in `payments`.
    /// The entries belong to the probe's own payer and provider and are voided at the end,
    /// so they never settle and never count in the drain or on-chain checks.
    async fn probe_ledger(
        &self,
        payments: &[PaymentBuilder],
        suffix: &str,
    ) -> anyhow::Result<(Vec<Phase>, Vec<EntryId>)> {
        let gw = &self.gateway;
        let offer = payments.first().context("no probe payments")?.offer.clone();
        let verified = {
            let mut v = Vec::with_capacity(payments.len());
            for b in payments {
                v.push(gw.verifier.verify_signature_only(&offer, &b.v2()).await?);
            }
            v
        };
        let n = verified.len();
        let (token, busy_payer) = (self.chain.token, self.payers[0].address());
        let route_name = gw
            .live
            .get()
            .routes
            .iter()
            .find(|r| r.provider.id == DEFERRED_PROVIDER)
            .context("deferred route entry")?
            .name
            .clone();
        let route_name = &route_name;

        // A load payer, whose many entries the sum has to go through, as under load.
        let (pending, _) =
            timed(n, |_| async move { Ok(gw.ledger.spend().pending(CHAIN_ID, token, busy_payer).await?) }).await?;

        let (reserve, ids) = timed(n, |i| {
            let v = &verified[i];
            async move {
                let a = &v.authorization;
                let entry = NewEntry {
                    chain_id: v.chain_id,
                    asset: v.asset,
                    payer: a.from,
                    pay_to: a.to,
                    nonce: a.nonce,
                    amount: AtomicAmount::from_u256(a.value).context("amount")?,
                    valid_before_unix_s: u64::try_from(a.valid_before)?,
                    provider: "bench-probe".to_owned(),
                    route: route_name.clone(),
                    method: "GET".to_owned(),
                    path: format!("/deferred/weather/probe{i}"),
                    mode: SettlementMode::After,
                    payment: serde_json::to_string(v)?,
                    price_version: None,
                    credential: None,
                    credential_version: None,
                    now_unix_s: gw.clock.now_unix_s(),
                };
                Ok(gw.ledger.entries().reserve(&entry).await?)
            }
        })
        .await?;

        let (transition, _) = timed(n, |i| {
            let id = &ids[i];
            async move {
                let t = Transition::Forwarded { upstream_status: Some(200) };
                let moved = gw
                    .ledger
                    .entries()
                    .transition_from(id, EntryState::Reserved, t, "upstream_ok", None, gw.clock.now_unix_s())
                    .await?;
                ensure!(moved, "probe entry {id} was not in reserved");
                Ok(())
            }
        })
        .await?;

        let (by_id, _) = timed(n, |i| {
            let id = &ids[i];
            async move { gw.ledger.entries().get(id).await?.context("probe entry vanished") }
        })
        .await?;

        // The same sum for an address with no history, for reference: the query reads every
        // entry the payer ever had (through the unique index's prefix) to filter on state.
        let fresh = random_key().address();
        let (pending_fresh, _) =
            timed(n, |_| async move { Ok(gw.ledger.spend().pending(CHAIN_ID, token, fresh).await?) }).await?;
        let history = self.entries_of(busy_payer).await?;

        let mut pending = Phase::new(format!("ledger_pending_spend{suffix}"), true, pending);
        pending.note = format!("payer_entries={history}");
        Ok((
            vec![
                pending,
                Phase::new(format!("ledger_pending_spend_no_history{suffix}"), false, pending_fresh),
                Phase::new(format!("ledger_reserve{suffix}"), true, reserve),
                // Written beside the response on deferred routes, so not in the path's sum.
                Phase::new(format!("ledger_transition_forwarded{suffix}"), false, transition),
                Phase::new(format!("ledger_entry_by_id{suffix}"), false, by_id),
            ],
            ids,
        ))
    }

    /// How many ledger entries `payer` has, in any state.
    async fn entries_of(&self, payer: Address) -> anyhow::Result<u64> {
        let q = SpendQuery {
            chain_id: CHAIN_ID,
            asset: self.chain.token,
            payer,
            provider: None,
            route: None,
            created_from_unix_s: None,
            created_before_unix_s: None,
        };
        let t = self.gateway.ledger.spend().totals(&q).await?;
        Ok(t.settled.count + t.pending.count + t.refund_owed.count)
    }

    async fn void_probe_entries(&self, ids: &[EntryId]) -> anyhow::Result<()> {
        let gw = &self.gateway;
        for id in ids {
            let t = Transition::Voided { reason: "bench_probe".to_owned() };
            gw.ledger
                .entries()
                .transition_from(id, EntryState::Forwarded, t, "bench_probe", None, gw.clock.now_unix_s())
                .await?;
        }
        Ok(())
    }
}

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
