//! The public listener's limits, from outside over real TCP (and TLS): slow heads and idle
//! connections are cut, the connection cap holds, over-concurrency is shed, oversized heads
//! and targets are refused with their codes, the per-IP budget of requests without a valid
//! payment answers 429 while a paying client is still served, and floods of bad or unfunded
//! payments cost a bounded number of RPC calls (counted by the verifier's `RpcStats`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_gateway::Gateway;
use tollgate_test_support::{PaymentBuilder, TestCa, random_key, v2_header};

use crate::harness::{Engine, Harness, Options};

fn with_server(server_config: &str) -> Options {
    Options { server_config: server_config.to_owned(), ..Options::default() }
}

fn addr(h: &Harness) -> String {
    h.url.trim_start_matches("http://").trim_start_matches("https://").to_owned()
}

/// A reqwest client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    tollgate_test_support::http_builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Waits for the server to close `s` (EOF or reset); the time it took. Panics after `max`.
async fn wait_closed(s: &mut TcpStream, max: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(max.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {max:?}"),
        }
    }
}

/// Sends `GET path` on an open keep-alive connection and reads one response; its status.
async fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n").as_bytes()).await.unwrap();
    read_response(s).await
}

async fn read_response(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Every RPC call the gateway has made so far (all networks, all methods).
fn rpc_calls(gw: &Gateway) -> u64 {
    gw.rpc_stats.iter().flat_map(|(_, s)| s.snapshot()).map(|(_, c)| c.calls).sum()
}

// Goal: a client that never finishes its request head is cut after `header_read_timeout_ms`,
// whether it trickles header lines or sends nothing; an idle keep-alive connection is kept
// past the header timeout and closed after `keep_alive_timeout_ms`; both are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_cut() {
    let h = Harness::start_with(
        Engine::Sqlite,
        with_server("header_read_timeout_ms = 600\nkeep_alive_timeout_ms = 1500\n"),
    )
    .await
    .unwrap();
    let to = addr(&h);

    // Slowloris: a header line every 150 ms, never the blank line that ends the head.
    let mut slow = TcpStream::connect(&to).await.unwrap();
    let opened = Instant::now();
    slow.write_all(b"GET /weather/x HTTP/1.1\r\nHost: gateway.test\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if slow.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        slow
    });
    // A silent connection: nothing at all.
    let mut silent = TcpStream::connect(&to).await.unwrap();
    let silent_cut = wait_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(silent_cut >= Duration::from_millis(500), "cut too early: {silent_cut:?}");
    let mut slow = trickle.await.unwrap();
    let slow_cut = opened.elapsed();
    wait_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        slow_cut >= Duration::from_millis(500) && slow_cut < Duration::from_secs(6),
        "the trickling client was cut after {slow_cut:?}"
    );

    // Keep-alive: one request answered, then idle. Kept past the 600 ms header timeout (it
    // does not apply before the next request's first byte), closed after about 1.5 s.
    let mut idle = TcpStream::connect(&to).await.unwrap();
    assert_eq!(get_on(&mut idle, "/healthz").await, 200);
    let idle_cut = wait_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(idle_cut >= Duration::from_millis(1300), "idle connection closed after {idle_cut:?}");

    // A keep-alive connection that starts its next head and stalls is cut by the header
    // timeout, counted from that first byte.
    let mut stalls = TcpStream::connect(&to).await.unwrap();
    assert_eq!(get_on(&mut stalls, "/healthz").await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stalls.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let stall_cut = wait_closed(&mut stalls, Duration::from_secs(10)).await;
    assert!(stall_cut < Duration::from_millis(1400), "cut by the idle timeout instead: {stall_cut:?}");

    let m = &h.gateway.metrics.listener;
    assert!(m.cut_count("header_timeout") >= 3, "{}", m.cut_count("header_timeout"));
    assert!(m.cut_count("idle_timeout") >= 1);
    // And the listener still serves.
    assert_eq!(h.http.get(format!("{}/healthz", h.url)).send().await.unwrap().status(), StatusCode::OK);
    h.stop().await;
}

// Goal: the same limits on a TLS listener: a client that never sends its ClientHello is cut
// at the header timeout, and so is one that completes the handshake and stalls its head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_cuts_slow_handshakes_and_heads() {
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    ca.issue_to(&["localhost", "127.0.0.1"], &cert_file, &key_file).unwrap();
    let h = Harness::start_with(
        Engine::Sqlite,
        with_server(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nheader_read_timeout_ms = 600\n",
            cert_file.display(),
            key_file.display()
        )),
    )
    .await
    .unwrap();
    let to = addr(&h);
    let mut silent = TcpStream::connect(&to).await.unwrap();
    let cut = wait_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(cut >= Duration::from_millis(500), "{cut:?}");
    assert!(h.gateway.metrics.listener.cut_count("tls_handshake") >= 1);

    let config = ca.client_tls().config();
    let tcp = TcpStream::connect(&to).await.unwrap();
    let opened = Instant::now();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.expect("cut");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(opened.elapsed() >= Duration::from_millis(500));
    assert!(h.gateway.metrics.listener.cut_count("header_timeout") >= 1);
    // A paying agent's client still gets its challenge over TLS.
    let port = to.rsplit(':').next().unwrap();
    let resp = ca.http().get(format!("https://localhost:{port}/weather/x")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    h.stop().await;
}

// Goal: with `connections_max = 16`, 16 keep-alive connections are served; the 17th is
// closed at once without an answer (counted `connection_cap`), and once some close, new
// connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_holds() {
    let h = Harness::start_with(Engine::Sqlite, with_server("connections_max = 16\n")).await.unwrap();
    let to = addr(&h);
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(&to).await.unwrap();
        assert_eq!(get_on(&mut s, "/healthz").await, 200);
        held.push(s);
    }
    let mut over = TcpStream::connect(&to).await.unwrap();
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await;
    let closed = wait_closed(&mut over, Duration::from_secs(5)).await;
    assert!(closed < Duration::from_secs(2), "refused promptly, not held: {closed:?}");
    assert!(h.gateway.metrics.listener.cut_count("connection_cap") >= 1);
    // The held connections still work.
    assert_eq!(get_on(&mut held[0], "/healthz").await, 200);

    held.truncate(12);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.gateway.metrics.listener.open_now() > 12 {
        assert!(Instant::now() < deadline, "closed connections never released their slots");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = TcpStream::connect(&to).await.unwrap();
    assert_eq!(get_on(&mut again, "/healthz").await, 200);
    h.stop().await;
}

// Goal: with `concurrency_max = 2` and two paid calls in flight (an upstream that takes a
// second), a third request is shed at once with 503 `overloaded` and `Retry-After`; the
// probes are not shed; once the calls end, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_concurrency_is_shed_with_503() {
    let h = Harness::start_with(Engine::Sqlite, with_server("concurrency_max = 2\n")).await.unwrap();
    let mut calls = Vec::new();
    let seen_before = h.upstream.calls();
    for _ in 0..2 {
        let b = h.payment("/slow").await;
        let req = h.http.get(format!("{}/slow", h.url)).header("payment-signature", v2_header(&b));
        calls.push(tokio::spawn(req.send()));
    }
    // Both calls hold their slots once the upstream has their requests (it then holds them
    // for the route's 1 s upstream timeout).
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.upstream.calls() < seen_before + 2 {
        assert!(Instant::now() < deadline, "the two paid calls never reached the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let resp = h.http.get(format!("{}/weather/x", h.url)).send().await.unwrap();
    // Queued, it would have waited for a slot: until the calls' upstream timeout, ~1 s.
    assert!(started.elapsed() < Duration::from_millis(800), "shed at once, not queued");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    assert_eq!(error_code(resp).await, "overloaded");
    assert_eq!(h.http.get(format!("{}/healthz", h.url)).send().await.unwrap().status(), StatusCode::OK);
    for c in calls {
        // The upstream timed out (1 s): nothing charged; what matters is that they held slots.
        assert_eq!(c.await.unwrap().unwrap().status(), StatusCode::GATEWAY_TIMEOUT);
    }
    let resp = h.http.get(format!("{}/weather/x", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(h.gateway.metrics.listener.limited_count("overloaded") >= 1);
    h.stop().await;
}

// Goal: heads over the configured limits are refused with their codes before routing: too
// many header bytes or fields → 431 `headers_too_large`, a long target → 414 `uri_too_long`;
// a head far beyond them is refused by the HTTP parser (bare 431); a normal request is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_long_targets_414() {
    let h = Harness::start_with(
        Engine::Sqlite,
        with_server("header_bytes_max = 18432\nheaders_count_max = 20\nuri_bytes_max = 1024\n"),
    )
    .await
    .unwrap();
    let url = format!("{}/weather/x", h.url);
    let resp = h.http.get(&url).header("x-big", "a".repeat(20 * 1024)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(resp).await, "headers_too_large");

    let mut req = h.http.get(&url);
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(resp).await, "headers_too_large");

    let resp = h.http.get(format!("{url}?q={}", "b".repeat(2000))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(error_code(resp).await, "uri_too_long");
    // Also on the gateway's own paths.
    let resp = h.http.get(format!("{}/receipts/{}", h.url, "c".repeat(2000))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);

    let resp = h.http.get(&url).header("x-huge", "d".repeat(100 * 1024)).send().await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    } // (or the connection was closed while the client was still sending)

    let resp = h.http.get(&url).header("x-fine", "e".repeat(8 * 1024)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let m = &h.gateway.metrics.listener;
    assert!(m.limited_count("headers_too_large") >= 2 && m.limited_count("uri_too_long") >= 2);
    h.stop().await;
}

// Goal: one address flooding unpaid requests, and another sending payments that fail the
// offline checks, each get their burst and then 429 `rate_limited` with `Retry-After`, and
// the offline failures cost no RPC call; meanwhile a paying client on its own address — which
// asks for a quote before every payment — is served every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_flood_is_rate_limited_while_a_paying_client_is_served() {
    let h = Harness::start_with(Engine::Sqlite, with_server("unpaid_per_ip_per_s = 1\nunpaid_per_ip_burst = 5\n"))
        .await
        .unwrap();
    let url = format!("{}/weather/x", h.url);
    let flood = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    let mut limited = None;
    let started = Instant::now();
    for _ in 0..20 {
        let resp = flood.get(&url).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            let retry: u64 = resp.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
            limited = Some(error_code(resp).await);
        }
    }
    // The burst, plus what the 1/s refill added while the loop ran (none on an idle box).
    let refilled = started.elapsed().as_secs() as usize;
    let quoted = statuses.iter().filter(|s| **s == 402).count();
    assert!((5..=5 + refilled).contains(&quoted), "{quoted} quotes in {refilled} s: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20 - quoted, "{statuses:?}");
    assert_eq!(limited.as_deref(), Some("rate_limited"));

    // Payments that fail the offline checks (a value that is not the price: signed, but
    // not for this offer) count too, and never reach the chain.
    let offer = h.offer("/weather/x").await;
    let rpc_before = rpc_calls(&h.gateway);
    let bad = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..10 {
        let mut b = PaymentBuilder::new(&offer, &h.payer, h.now);
        b.value = alloy_primitives::U256::from(7u64);
        let header = v2_header(&b);
        statuses.push(bad.get(&url).header("payment-signature", header).send().await.unwrap().status().as_u16());
    }
    let refilled = started.elapsed().as_secs() as usize;
    let limited_n = statuses.iter().filter(|s| **s == 429).count();
    assert!((5 - refilled.min(5)..=5).contains(&limited_n), "{limited_n} limited in {refilled} s: {statuses:?}");
    assert!(statuses.iter().take(5).all(|s| *s == 402), "{statuses:?}");
    assert_eq!(rpc_calls(&h.gateway), rpc_before, "payments failing the offline checks made RPC calls");

    // The paying client, a quote before each payment, twice its burst: never limited.
    for i in 0..10 {
        let b = h.payment(&format!("/weather/city{i}")).await;
        let resp = h
            .http
            .get(format!("{}/weather/city{i}", h.url))
            .header("payment-signature", v2_header(&b))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    }
    // The flooding address is still limited: it has regained at most its burst meanwhile.
    let mut again = 0;
    for _ in 0..10 {
        if flood.get(&url).send().await.unwrap().status() == StatusCode::TOO_MANY_REQUESTS {
            again += 1;
        }
    }
    assert!(again >= 5, "{again} of 10 limited");
    assert!(h.gateway.metrics.listener.limited_count("rate_limited") >= 20);
    h.stop().await;
}

// Goal: a flood of validly signed payments from unfunded wallets makes a bounded number of
// RPC calls: the per-IP budget lets `burst + rate × seconds` of them be verified (four RPC
// calls each) and answers the rest 429 before any work; and once a wallet is known unfunded
// (the balance cache), its payments are refused `insufficient_balance` from any address
// without an RPC call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfunded_wallet_flood_makes_bounded_rpc_calls() {
    let h = Harness::start_with(
        Engine::Sqlite,
        Options {
            server_config: "unpaid_per_ip_per_s = 5\nunpaid_per_ip_burst = 10\n".to_owned(),
            extra_config: "\n[verification]\nbalance_cache_ttl_ms = 60000\n".to_owned(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let url = format!("{}/weather/x", h.url);
    let offer = h.offer("/weather/x").await;

    // 400 payments from 400 fresh (unfunded) wallets, 50 in flight at once, from one address.
    let headers: Vec<String> =
        (0..400).map(|_| v2_header(&PaymentBuilder::new(&offer, &random_key(), h.now))).collect();
    let flood = client_from("127.0.0.2");
    let rpc_before = rpc_calls(&h.gateway);
    let started = Instant::now();
    let headers = Arc::new(tokio::sync::Mutex::new(headers));
    let mut workers = Vec::new();
    for _ in 0..50 {
        let (flood, url, headers) = (flood.clone(), url.clone(), headers.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(header) = headers.lock().await.pop() {
                let resp = flood.get(&url).header("payment-signature", header).send().await.unwrap();
                seen.push(resp.status().as_u16());
            }
            seen
        }));
    }
    let mut statuses = Vec::new();
    for w in workers {
        statuses.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rpc = rpc_calls(&h.gateway) - rpc_before;
    let verified = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(verified + statuses.iter().filter(|s| **s == 429).count(), 400, "{statuses:?}");
    let allowed = 10.0 + 5.0 * elapsed;
    assert!(verified as f64 <= allowed + 1.0, "{verified} verified in {elapsed:.2} s");
    assert!((rpc as f64) <= 4.0 * (allowed + 1.0), "{rpc} RPC calls for {verified} verified in {elapsed:.2} s");
    println!("unfunded flood: 400 requests in {elapsed:.2} s, {verified} verified, {rpc} RPC calls");

    // One unfunded wallet, once known: its payments from four other addresses cost nothing.
    let wallet = random_key();
    let first = h
        .http
        .get(&url)
        .header("payment-signature", v2_header(&PaymentBuilder::new(&offer, &wallet, h.now)))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::PAYMENT_REQUIRED);
    let rpc_known = rpc_calls(&h.gateway);
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        let c = client_from(from);
        for _ in 0..10 {
            let b = PaymentBuilder::new(&offer, &wallet, h.now);
            let resp = c.get(&url).header("payment-signature", v2_header(&b)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "invalid_exact_evm_insufficient_balance", "{body}");
        }
    }
    assert_eq!(rpc_calls(&h.gateway), rpc_known, "a known-unfunded wallet's payments reached the chain");
    assert!(h.gateway.metrics.listener.limited_count("unfunded_cached") >= 40);
    h.stop().await;
}

// Goal: a request without a payment that is not answered within `request_timeout_ms` gets
// 503 `request_timeout`; the same slow handler with a payment header is not cut (a paid call
// is bounded by its own phases, never by this timer). Served by the gateway's own accept
// loop and limit layers around a deliberately slow route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unpaid_request_times_out_with_503() {
    let h = Harness::start_with(Engine::Sqlite, with_server("request_timeout_ms = 300\n")).await.unwrap();
    let slow = axum::Router::new().route(
        "/sleep",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            "late"
        }),
    );
    let app = tollgate_gateway::limits::layered(&h.gateway, axum::Router::new(), slow);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sleep", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate_gateway::listener::serve_connections(listener, app, h.gateway.clone(), async move {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let resp = h.http.get(&url).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1100), "{:?}", started.elapsed());
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    assert_eq!(error_code(resp).await, "request_timeout");
    let resp = h.http.get(&url).header("payment-signature", "x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "late");
    assert!(h.gateway.metrics.listener.limited_count("request_timeout") >= 1);
    let _ = stop.send(());
    h.stop().await;
}
