//! TLS with real handshakes: https upstreams and RPC trusted through `[tls] extra_ca_file`,
//! a refused upstream certificate (named by host, nothing charged), and the public listener
//! serving TLS with its certificate renewed in place while connections stay open.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tollgate_metering::EntryState;
use tollgate_test_support::{MockUpstream, RpcFaultProxy, TestCa, v2_header};

use crate::harness::{API_KEY, Engine, Harness, Options, PRICE_ATOMIC};
use crate::secrets::captured_logs;

fn with_ca(ca: &TestCa) -> String {
    format!("\n[tls]\nextra_ca_file = \"{}\"\n", ca.ca_file().display())
}

// Goal: with the test CA as `[tls] extra_ca_file`, a paid call to an https upstream, verified
// and settled through an https RPC endpoint (a TLS-terminating proxy in front of anvil),
// succeeds: the injected credential arrives over TLS and the payee is paid on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_and_rpc_with_the_ca_pay_and_settle() {
    let ca = TestCa::new().unwrap();
    let upstream = MockUpstream::start_tls(ca.server_config(&["localhost"]).unwrap()).await.unwrap();
    let h = Harness::start_with(
        Engine::Sqlite,
        Options { upstream_url: Some(upstream.url()), extra_config: with_ca(&ca), ..Options::default() },
    )
    .await
    .unwrap();
    // RPC over TLS: a replica of the harness's gateway (same chain and ledger) whose rpc_url
    // is the TLS proxy in front of anvil; the harness's own gateway is not called.
    let proxy = RpcFaultProxy::start_tls(&h.chain.anvil.url, ca.server_config(&["localhost"]).unwrap()).await.unwrap();
    assert!(proxy.url().starts_with("https://localhost:"));
    let text = h.config_text_for_test().replace(&h.chain.anvil.url, &proxy.url());
    assert!(text.contains(&proxy.url()), "the replica's rpc_url is the proxy");
    let config = tollgate_gateway::Config::parse(&text, &|k| h.env.get(k).cloned()).expect("config");
    let gw = tollgate_gateway::Gateway::start(config, h.clock.clone()).await.expect("starts over https RPC");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate_gateway::serve(listener, gw.clone(), async move {
        let _ = stopped.await;
    }));

    let b = h.payment("/weather/berlin").await;
    let resp =
        h.http.get(format!("{url}/weather/berlin")).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    let seen = upstream.last_request().expect("the https upstream was called");
    assert_eq!(seen.header("authorization").as_deref(), Some(format!("Bearer {API_KEY}").as_str()));
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::from(PRICE_ATOMIC));
    assert!(proxy.calls("eth_sendRawTransaction") >= 1, "settled through the TLS proxy");
    assert!(proxy.calls("eth_call") >= 1, "verified through the TLS proxy");
    let _ = stop.send(());
    h.stop().await;
}

// Goal: without the CA configured, the https upstream's certificate is refused: the agent gets
// 502 upstream_unavailable, the entry is voided and nothing moves on chain, and the log names
// the upstream's host and the reason, never the URL or its query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_without_the_ca_is_refused_naming_the_host_and_nothing_is_charged() {
    let logs = captured_logs();
    let ca = TestCa::new().unwrap();
    let upstream = MockUpstream::start_tls(ca.server_config(&["localhost"]).unwrap()).await.unwrap();
    let port = upstream.url().rsplit(':').next().unwrap().to_owned();
    let h = Harness::start_with(Engine::Sqlite, Options { upstream_url: Some(upstream.url()), ..Options::default() })
        .await
        .unwrap();
    let b = h.payment("/weather/berlin").await;
    let resp = h
        .http
        .get(format!("{}/weather/berlin?units=metric&token=QUERYSECRET42", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable", "{body}");
    assert_eq!(upstream.total_hits(), 0, "no request got through the refused handshake");
    h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::ZERO);

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("TLS handshake with localhost:{port} failed")))
        .unwrap_or_else(|| panic!("no log line names the host and port:\n{text}"));
    assert!(line.contains("unknown issuer"), "{line}");
    assert!(!text.contains("QUERYSECRET42"), "the URL's query reached the log");
    h.stop().await;
}

/// A TLS connection to `addr` trusting `ca` only, and the certificate the server presented.
async fn connect(addr: &str, ca: &TestCa) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let config = ca.client_tls().config();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    (tls, cert)
}

/// `GET /healthz` on an open keep-alive connection; the status code.
async fn healthz(tls: &mut TlsStream<TcpStream>) -> u16 {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Headers, then Content-Length bytes of body.
    loop {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
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

// Goal: the public listener serves TLS with `[server] tls_cert_file`; when the certificate
// files are replaced, a new connection gets the new certificate (file-change reload) while a
// keep-alive connection opened before keeps working on its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificate_reloads_on_file_change_without_dropping_connections() {
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    let first = ca.issue_to(&["localhost", "127.0.0.1"], &cert_file, &key_file).unwrap();
    let h = Harness::start_with(
        Engine::Sqlite,
        Options {
            server_config: format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                cert_file.display(),
                key_file.display()
            ),
            extra_config: "\n[tls]\ncert_reload_interval_ms = 100\n".to_owned(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let addr = h.url.strip_prefix("https://").expect("the listener serves https").to_owned();
    let (mut old, old_cert) = connect(&addr, &ca).await;
    assert_eq!(old_cert.as_ref(), pem_der(&first.cert_pem).as_ref());
    assert_eq!(healthz(&mut old).await, 200);

    let second = ca.issue_to(&["localhost", "127.0.0.1"], &cert_file, &key_file).unwrap();
    let mut renewed = false;
    for _ in 0..100 {
        let (mut fresh, cert) = connect(&addr, &ca).await;
        assert_eq!(healthz(&mut fresh).await, 200);
        if cert.as_ref() == pem_der(&second.cert_pem).as_ref() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "a new connection never got the renewed certificate");
    assert_eq!(healthz(&mut old).await, 200, "the keep-alive connection opened before the reload still works");
    // A paying agent's client (trusting the CA) works against the TLS listener too.
    let resp = ca.http().get(format!("https://localhost:{}/weather/x", addr.rsplit(':').next().unwrap())).send().await;
    assert_eq!(resp.unwrap().status(), StatusCode::PAYMENT_REQUIRED);
    h.stop().await;
}

fn pem_der(pem: &str) -> CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}
