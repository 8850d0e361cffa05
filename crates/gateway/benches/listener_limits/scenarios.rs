//! The scenarios: a flood of unpaid and bad-payment requests beside paid calls, TLS per paid
//! call, and the memory of idle connections, each printing its numbers.

use super::*;

/// Open loop at `rate` a second, round robin over `clients`, at most 512 in flight; each
/// request carries the next of `headers` (cycling) as its payment, or none.
pub(crate) async fn flood_loop(
    clients: Vec<reqwest::Client>,
    url: String,
    rate: u32,
    headers: Option<Arc<Vec<String>>>,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    if rate == 0 {
        return;
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut req = clients[i % clients.len()].get(&url);
        if let Some(h) = &headers {
            req = req.header("payment-signature", h[i % h.len()].clone());
        }
        i += 1;
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let tally = tally.clone();
        tokio::spawn(async move {
            let r = req.send().await;
            tally.record(&r);
            if let Ok(resp) = r {
                let _ = resp.bytes().await;
            }
            drop(permit);
        });
    }
}

#[derive(Default)]
pub(crate) struct Loris {
    open: AtomicI64,
    connects: AtomicU64,
    cut: AtomicU64,
}

/// One slowloris connection at a time: a request line and a header, then a header line a
/// second, never the blank line; reconnects when cut.
pub(crate) async fn slowloris(from: &'static str, to: String, loris: Arc<Loris>, mut stop: watch::Receiver<bool>) {
    loop {
        let socket = TcpSocket::new_v4().and_then(|s| {
            s.bind(format!("{from}:0").parse().map_err(std::io::Error::other)?)?;
            Ok(s)
        });
        let Ok(socket) = socket else { return };
        let stream = tokio::select! {
            _ = stop.changed() => return,
            s = socket.connect(to.parse().unwrap()) => s,
        };
        let Ok(mut s) = stream else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loris.connects.fetch_add(1, Ordering::Relaxed);
        loris.open.fetch_add(1, Ordering::Relaxed);
        let mut ok = s.write_all(b"GET /weather/x HTTP/1.1\r\nHost: gateway.test\r\n").await.is_ok();
        let mut buf = [0u8; 512];
        while ok {
            tokio::select! {
                _ = stop.changed() => {
                    loris.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                r = s.read(&mut buf) => {
                    // The server spoke or closed: either way, this connection is over.
                    let _ = r;
                    ok = false;
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    ok = s.write_all(b"X-Loris: 1\r\n").await.is_ok();
                }
            }
        }
        loris.open.fetch_sub(1, Ordering::Relaxed);
        loris.cut.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn flood(
    s: &Settings,
    stack: &Stack,
    infra: &Runtime,
    attack: &Runtime,
    client: &Runtime,
) -> anyhow::Result<()> {
    println!("--- flood: one paying client, idle vs under attack (mode after, 1 in flight, keep-alive)");
    let gw = infra.block_on(GatewayChild::spawn(stack, None, ""))?;
    let base = gw.url(false);
    let payer_http = http(None, None)?;
    let offer = client.block_on(offer(&payer_http, &base))?;
    let now = infra.block_on(stack.now())?;
    let n = WARMUP + s.calls;
    let signing = Instant::now();
    let idle_calls: Vec<String> = (0..n).map(|_| sign(&offer, &stack.payer, now)).collect();
    let attack_calls: Vec<String> = (0..n).map(|_| sign(&offer, &stack.payer, now)).collect();
    let unfunded: Arc<Vec<String>> = Arc::new((0..UNFUNDED_POOL).map(|_| sign(&offer, &random_key(), now)).collect());
    println!(
        "setup: {} payments signed ({UNFUNDED_POOL} by distinct unfunded wallets) in {:.1} s",
        2 * n + UNFUNDED_POOL,
        signing.elapsed().as_secs_f64()
    );

    let rpc_before = stack.proxy.total_calls();
    let idle = client.block_on(paid_series(&payer_http, &base, idle_calls))?;
    let rpc_per_paid = (stack.proxy.total_calls() - rpc_before) as f64 / n as f64;
    println!(
        "idle: paid_calls={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rpc_calls_per_paid_call={rpc_per_paid:.1}",
        s.calls,
        ms(&idle, 0.5),
        ms(&idle, 0.99),
        ms(&idle, 1.0)
    );
    let base_rpc = stack.proxy.total_calls();
    std::thread::sleep(RPC_WINDOW);
    let baseline = stack.proxy.total_calls() - base_rpc;
    println!("rpc_baseline: {baseline} calls in {}s with no traffic (the readiness monitor)", RPC_WINDOW.as_secs());

    // The attack.
    let (stop_tx, stop_rx) = watch::channel(false);
    let loris = Arc::new(Loris::default());
    let (unpaid, unfunded_tally) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let url = format!("{base}/weather/x");
    {
        let _guard = attack.enter();
        for i in 0..s.slowloris {
            let from = SLOWLORIS_FROM[i % SLOWLORIS_FROM.len()];
            attack.spawn(slowloris(from, gw.addr.clone(), loris.clone(), stop_rx.clone()));
        }
        let clients = |ips: &[&str]| ips.iter().map(|ip| http(Some(ip), None)).collect::<anyhow::Result<Vec<_>>>();
        attack.spawn(flood_loop(
            clients(&UNPAID_FROM)?,
            url.clone(),
            s.unpaid_rps,
            None,
            unpaid.clone(),
            stop_rx.clone(),
        ));
        attack.spawn(flood_loop(
            clients(&UNFUNDED_FROM)?,
            url.clone(),
            s.unfunded_rps,
            Some(unfunded),
            unfunded_tally.clone(),
            stop_rx.clone(),
        ));
    }
    let ramp = Instant::now();
    while loris.open.load(Ordering::Relaxed) < i64::try_from(s.slowloris)? * 95 / 100 {
        if ramp.elapsed() > Duration::from_secs(30) {
            println!("anomaly: only {} slowloris connections open after 30 s", loris.open.load(Ordering::Relaxed));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "attack: {} slowloris connections open after {:.1} s; floods at {} unpaid/s (from {} addresses) and {} \
         unfunded payments/s (from {} addresses)",
        loris.open.load(Ordering::Relaxed),
        ramp.elapsed().as_secs_f64(),
        s.unpaid_rps,
        UNPAID_FROM.len(),
        s.unfunded_rps,
        UNFUNDED_FROM.len()
    );
    std::thread::sleep(Duration::from_secs(2));

    // RPC calls the attack causes, with no paying traffic.
    let (u0, f0, r0) = (unpaid.snapshot(), unfunded_tally.snapshot(), stack.proxy.total_calls());
    let window = Instant::now();
    std::thread::sleep(RPC_WINDOW);
    let (u1, f1, r1) = (unpaid.snapshot(), unfunded_tally.snapshot(), stack.proxy.total_calls());
    let secs = window.elapsed().as_secs_f64();
    let rpc = r1 - r0;
    let unfunded_sent = f1[0] - f0[0];
    println!("{}", tally_line("unpaid_flood", u0, u1, secs));
    println!("{}", tally_line("unfunded_flood", f0, f1, secs));
    println!(
        "flood_rpc: {rpc} RPC calls in {secs:.1} s of attack alone ({} above the idle baseline of {baseline}) for \
         {unfunded_sent} unfunded payments ({:.3} calls per payment); slowloris open={} cut_so_far={}",
        rpc.saturating_sub(baseline),
        rpc.saturating_sub(baseline) as f64 / unfunded_sent.max(1) as f64,
        loris.open.load(Ordering::Relaxed),
        loris.cut.load(Ordering::Relaxed)
    );

    // The paying client under attack.
    let (u0, f0) = (unpaid.snapshot(), unfunded_tally.snapshot());
    let measured = Instant::now();
    let under = client.block_on(paid_series(&payer_http, &base, attack_calls));
    let secs = measured.elapsed().as_secs_f64();
    let (u1, f1) = (unpaid.snapshot(), unfunded_tally.snapshot());
    let open = loris.open.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let under = under?;
    println!(
        "under_attack: paid_calls={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} p99_vs_idle={:.2}x (target <= 2x); \
         slowloris open at the end={open} connects={} cut={}",
        s.calls,
        ms(&under, 0.5),
        ms(&under, 0.99),
        ms(&under, 1.0),
        ms(&under, 0.99) / ms(&idle, 0.99),
        loris.connects.load(Ordering::Relaxed),
        loris.cut.load(Ordering::Relaxed)
    );
    println!("{}", tally_line("unpaid_flood_during_measure", u0, u1, secs));
    println!("{}", tally_line("unfunded_flood_during_measure", f0, f1, secs));
    std::thread::sleep(Duration::from_millis(500));
    infra.block_on(gw.stop());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenario `tls`.

pub(crate) fn tls(s: &Settings, stack: &Stack, infra: &Runtime, client: &Runtime) -> anyhow::Result<()> {
    println!(
        "--- tls: paid calls (mode after, 1 in flight, one keep-alive connection) and unpaid quotes, plain vs https, \
         three runs each in the order plain https https plain plain https"
    );
    let ca = TestCa::new()?;
    let mut rows: HashMap<bool, Vec<[f64; 6]>> = HashMap::new();
    for tls in [false, true, true, false, false, true] {
        let name = if tls { "https" } else { "plain" };
        let ca = tls.then_some(&ca);
        // The quotes below come from one address, far beyond the per-IP limit: it is off here.
        let gw = infra.block_on(GatewayChild::spawn(stack, ca, "unpaid_per_ip_per_s = 0\n"))?;
        let base = gw.url(tls);
        let http = http(None, ca)?;
        let offer = client.block_on(offer(&http, &base))?;
        let now = infra.block_on(stack.now())?;
        let calls: Vec<String> = (0..WARMUP + s.calls).map(|_| sign(&offer, &stack.payer, now)).collect();
        let cpu0 = gw.cpu();
        let paid = client.block_on(paid_series(&http, &base, calls))?;
        let paid_cpu = (gw.cpu() - cpu0).as_secs_f64() * 1000.0 / (WARMUP + s.calls) as f64;
        // The gateway alone (no chain, no upstream): unpaid quotes on the same connection.
        let quotes = 10 * s.calls;
        let cpu0 = gw.cpu();
        let quote = client.block_on(async {
            let mut h = Histogram::<u64>::new(3)?;
            for _ in 0..quotes {
                let started = Instant::now();
                let resp = http.get(format!("{base}/weather/q")).send().await?;
                ensure!(resp.status() == StatusCode::PAYMENT_REQUIRED, "quote: {}", resp.status());
                let _ = resp.bytes().await?;
                h.record(u64::try_from(started.elapsed().as_micros())?)?;
            }
            Ok::<_, anyhow::Error>(h)
        })?;
        let quote_cpu = (gw.cpu() - cpu0).as_secs_f64() * 1000.0 / quotes as f64;
        println!(
            "{name}: paid_calls={} paid_p50_ms={:.2} paid_p99_ms={:.2} gateway_cpu_ms_per_paid_call={paid_cpu:.3} | \
             quotes={quotes} quote_p50_ms={:.3} quote_p99_ms={:.3} gateway_cpu_ms_per_quote={quote_cpu:.4}",
            s.calls,
            ms(&paid, 0.5),
            ms(&paid, 0.99),
            ms(&quote, 0.5),
            ms(&quote, 0.99)
        );
        rows.entry(tls).or_default().push([
            ms(&paid, 0.5),
            ms(&paid, 0.99),
            paid_cpu,
            ms(&quote, 0.5),
            ms(&quote, 0.99),
            quote_cpu,
        ]);
        infra.block_on(gw.stop());
    }
    let mean = |tls: bool, i: usize| {
        let r = &rows[&tls];
        r.iter().map(|v| v[i]).sum::<f64>() / r.len() as f64
    };
    let d = |i: usize| mean(true, i) - mean(false, i);
    println!(
        "tls_cost (https minus plain, means of three runs): paid call p50 {:+.2} ms, p99 {:+.2} ms, gateway CPU \
         {:+.3} ms per paid call; quote p50 {:+.3} ms, p99 {:+.3} ms, gateway CPU {:+.4} ms per quote",
        d(0),
        d(1),
        d(2),
        d(3),
        d(4),
        d(5)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenario `rss`.

pub(crate) fn rss(s: &Settings, stack: &Stack, infra: &Runtime, client: &Runtime) -> anyhow::Result<()> {
    println!("--- rss: gateway VmRSS with 0 and {} idle keep-alive connections", s.idle_conns);
    let ca = TestCa::new()?;
    for tls in [None, Some(&ca)] {
        let name = if tls.is_some() { "https" } else { "plain" };
        let gw = infra.block_on(GatewayChild::spawn(stack, tls, ""))?;
        // Warm-up: a few quotes, so lazily built state exists before the first reading.
        let http = http(None, tls)?;
        let base = gw.url(tls.is_some());
        for _ in 0..20 {
            client.block_on(offer(&http, &base))?;
        }
        drop(http);
        std::thread::sleep(Duration::from_secs(1));
        let before = gw.rss_kib();
        let conns = client.block_on(open_idle(&gw.addr, s.idle_conns, tls))?;
        std::thread::sleep(Duration::from_secs(2));
        let after = gw.rss_kib();
        let conns_open = conns.len();
        drop(conns);
        println!(
            "{name}: vmrss_kib_0_conns={before} vmrss_kib_{}_conns={after} delta_kib={} per_conn_kib={:.1} \
             (each connection served one GET /healthz, then idle)",
            conns_open,
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / conns_open.max(1) as f64
        );
        infra.block_on(gw.stop());
    }
    Ok(())
}

/// Opens `n` connections to `addr`, each serving one `GET /healthz`, and returns them open.
pub(crate) async fn open_idle(addr: &str, n: usize, tls: Option<&TestCa>) -> anyhow::Result<Vec<Box<dyn Send>>> {
    let connector = tls.map(|ca| tokio_rustls::TlsConnector::from(ca.client_tls().config()));
    let mut open: Vec<Box<dyn Send>> = Vec::new();
    for _ in 0..n {
        let tcp = TcpStream::connect(addr).await?;
        let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let mut buf = [0u8; 1024];
        match &connector {
            None => {
                let mut s = tcp;
                s.write_all(request).await?;
                ensure!(s.read(&mut buf).await? > 0, "closed");
                open.push(Box::new(s));
            }
            Some(c) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
                let mut s = c.connect(name, tcp).await?;
                s.write_all(request).await?;
                ensure!(s.read(&mut buf).await? > 0, "closed");
                open.push(Box::new(s));
            }
        }
    }
    Ok(open)
}
