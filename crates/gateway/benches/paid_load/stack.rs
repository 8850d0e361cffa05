//! The stack the bench runs against: anvil with the token, a bare axum upstream demanding its
//! key, one gateway on SQLite; the passes' calls, their measurement and the on-chain check.

use super::*;

pub(crate) struct Stack {
    pub(crate) chain: TestChain,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) gateway_url: String,
    pub(crate) upstream_url: String,
    pub(crate) payee: Address,
    pub(crate) payers: Vec<PrivateKeySigner>,
    pub(crate) servers: Vec<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    pub(crate) running: TestGateway,
    pub(crate) db_dir: tempfile::TempDir,
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
    pub(crate) async fn start(s: Settings) -> anyhow::Result<Stack> {
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

    pub(crate) async fn stop(self) {
        for (tx, task) in self.servers {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.running.stop().await;
    }

    /// Our offer for `GET path`, from a real 402.
    pub(crate) async fn offer(&self, http: &reqwest::Client, path: &str) -> anyhow::Result<v2::PaymentRequirements> {
        let resp = http.get(format!("{}{path}", self.gateway_url)).send().await?;
        ensure!(resp.status() == StatusCode::PAYMENT_REQUIRED, "GET {path} without payment: {}", resp.status());
        let raw = resp.headers().get("payment-required").context("no PAYMENT-REQUIRED header")?.as_bytes().to_vec();
        let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX)?;
        challenge.accepts.into_iter().next().context("no offer in the 402")
    }

    pub(crate) fn direct_calls(&self, n: usize) -> Vec<Call> {
        (0..n)
            .map(|i| Call {
                url: format!("{}/weather/city{i}", self.upstream_url),
                header: ("authorization", BEARER.to_owned()),
            })
            .collect()
    }

    pub(crate) fn paid_calls(&self, prefix: &str, offer: &v2::PaymentRequirements, now: u64, n: usize) -> Vec<Call> {
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
    pub(crate) async fn deferred_counts(&self) -> anyhow::Result<(u64, u64)> {
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
    pub(crate) async fn wait_deferred_settled(&self, expected: u64) -> anyhow::Result<()> {
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
    pub(crate) async fn deferred_pair(
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
    pub(crate) fn lower_chain_priority(&self) -> anyhow::Result<i64> {
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
    pub(crate) async fn measure_deferred(
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

    pub(crate) async fn check_onchain(&self, paid_calls: u64) -> anyhow::Result<()> {
        let balance = self.chain.balance(self.payee).await?;
        let expected = U256::from(paid_calls) * U256::from(PRICE_ATOMIC);
        ensure!(
            balance == expected,
            "onchain_check=FAILED payee balance {balance}, expected {expected} ({paid_calls} paid calls)"
        );
        println!("onchain_check=ok payee_balance_atomic={balance} paid_calls={paid_calls}");
        Ok(())
    }
}
