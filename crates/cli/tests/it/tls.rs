//! TLS through the binary: `tollgate serve` on an https listener (certificate reloaded on
//! SIGHUP), `tollgate call` and `tollgate wallet balance` over https with `--ca-file` /
//! `TOLLGATE_CA_FILE`, and the startup refusals that TLS settles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tollgate_test_support::{Deployment, MockUpstream, RpcFaultProxy, TestCa, TestChain, anvil_key, random_key};

use crate::agent::tollgate;
use crate::startup::{config, refused};

const PRICE: u64 = 1_000;

/// A TLS connection to `addr` trusting `ca`, and the certificate the server presented.
async fn connect(addr: &str, ca: &TestCa) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(ca.client_tls().config()).connect(name, tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    (tls, cert)
}

/// `GET /healthz` on an open keep-alive connection; whether it answered 200.
async fn healthz_ok(tls: &mut TlsStream<TcpStream>) -> bool {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tls.read(&mut chunk).await.unwrap();
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                return head.starts_with("HTTP/1.1 200");
            }
        }
    }
}

fn der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

// Goal: `tollgate serve` with `[server] tls_cert_file` listens on https; `tollgate call
// --ca-file` pays a route through it (exit 0, paid on chain); without the CA the call is a
// transport error (exit 6) naming the host and the reason, and nothing is signed; `tollgate
// wallet balance` reads through an https RPC endpoint with TOLLGATE_CA_FILE; SIGHUP reloads
// the certificate for new connections while an open keep-alive connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_call_balance_and_sighup_reload() {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let upstream = MockUpstream::start().await.unwrap();
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    let first = ca.issue_to(&["localhost", "127.0.0.1"], &cert_file, &key_file).unwrap();
    let payee = random_key().address();
    let relayer = format!("{:#x}", anvil_key(9).to_bytes());
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert_file = "{cert}"
tls_key_file = "{key}"

[tls]
cert_reload_interval_ms = 0

[admin]
enabled = false

[database]
url = "sqlite://{db}?mode=rwc"

[settlement]
relayer_key_env = "TG_TLS_RELAYER"
receipt_poll_interval_ms = 5

[[networks]]
id = "eip155:8453"
rpc_url = "{rpc}"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "weather"
pay_to = "{payee:#x}"
upstream = "{upstream}"

[[providers.routes]]
path = "/weather/{{city}}"
price_atomic = "{PRICE}"
"#,
        cert = cert_file.display(),
        key = key_file.display(),
        db = dir.path().join("ledger.db").display(),
        rpc = chain.anvil.url,
        upstream = upstream.url(),
    );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let served = crate::serve::spawn_serve_with_admin(&path, &[("TG_TLS_RELAYER", relayer)], log.clone()).await;
    let base = served.url.clone();
    let addr = base.strip_prefix("https://").expect("an https listener").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    let payer = random_key();
    chain.mint(payer.address(), 1_000_000).await.unwrap();
    let key = format!("{:#x}", payer.to_bytes());
    let home = tempfile::tempdir().unwrap();
    let ca_file = ca.ca_file().to_str().unwrap().to_owned();
    let url = format!("https://localhost:{port}/weather/paris");

    let (code, _, err) = tollgate(home.path(), &["call", &url], &[("TOLLGATE_KEY", &key)]).await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains(&format!("TLS handshake with localhost:{port} failed")) && err.contains("unknown issuer"),
        "{err}"
    );
    assert!(!err.contains("/weather/paris"), "the URL is not printed: {err}");
    let store = tollgate_client::SpendStore::open(home.path().join("spend.json")).unwrap();
    assert_eq!(store.records().unwrap().len(), 0, "nothing signed");

    let (code, out, err) =
        tollgate(home.path(), &["call", "--ca-file", &ca_file, &url], &[("TOLLGATE_KEY", &key)]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ok");
    assert!(err.contains("state paid"), "{err}");
    assert_eq!(chain.balance(payee).await.unwrap(), alloy_primitives::U256::from(PRICE));

    // wallet balance through an https RPC endpoint, the CA from the environment.
    let proxy = RpcFaultProxy::start_tls(&chain.anvil.url, ca.server_config(&["localhost"]).unwrap()).await.unwrap();
    let who = format!("{:#x}", payee);
    let (code, out, err) = tollgate(
        home.path(),
        &["wallet", "balance", "--rpc", &format!("{}/v2/RPCKEY9d1c", proxy.url()), "--address", &who],
        &[("TOLLGATE_CA_FILE", &ca_file)],
    )
    .await;
    assert_eq!((code, out.trim()), (0, PRICE.to_string().as_str()), "{err}");
    let (code, _, err) = tollgate(
        home.path(),
        &["wallet", "balance", "--rpc", &format!("{}/v2/RPCKEY9d1c", proxy.url()), "--address", &who],
        &[],
    )
    .await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("TLS handshake with localhost:") && !err.contains("RPCKEY9d1c"), "{err}");

    // SIGHUP: a renewed certificate for new connections, the open one keeps working.
    let (mut old, old_cert) = connect(&addr, &ca).await;
    assert_eq!(old_cert.to_vec(), der(&first.cert_pem));
    assert!(healthz_ok(&mut old).await);
    let second = ca.issue_to(&["localhost", "127.0.0.1"], &cert_file, &key_file).unwrap();
    let (_, still) = connect(&addr, &ca).await;
    assert_eq!(still.to_vec(), der(&first.cert_pem), "no reload without SIGHUP (file polling is off)");
    let pid = served.gateway.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut renewed = false;
    for _ in 0..100 {
        let (mut fresh, cert) = connect(&addr, &ca).await;
        assert!(healthz_ok(&mut fresh).await);
        if cert.to_vec() == der(&second.cert_pem) {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "no new connection got the renewed certificate:\n{}", log.lock().unwrap().join("\n"));
    assert!(healthz_ok(&mut old).await, "the connection opened before SIGHUP still works");
    // The line is printed after the swap a new connection already sees, and reaches the log
    // sink through a pipe: wait for it (bounded) instead of racing it.
    let reloaded = || log.lock().unwrap().iter().any(|l| l.contains("SIGHUP: 1 TLS certificate(s) reloaded"));
    for _ in 0..100 {
        if reloaded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded(), "{}", log.lock().unwrap().join("\n"));
}

// Goal: startup refuses an `http://` RPC URL or upstream on a host that is not loopback,
// naming the key and the opt-out; an admin listener off loopback starts without the insecure
// opt-in when it serves TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_off_loopback_is_refused_and_admin_tls_is_accepted_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let relayer = "relayer_key_env = \"TG_STARTUP_RELAYER_KEY\"";
    let err = refused(dir.path(), &config("http://rpc.example:8545/v2/KEYd00d", &db, relayer, "")).await;
    assert!(err.contains("networks[0].rpc_url: http:// to a host that is not loopback"), "{err}");
    assert!(err.contains("allow_insecure_http") && !err.contains("KEYd00d"), "{err}");

    let rpc = crate::admin::chain_id_rpc().await;
    let provider = "\n[[providers]]\nid = \"p\"\npay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\nupstream = \"http://api.example\"\n";
    let err = refused(dir.path(), &config(&rpc, &db, relayer, provider)).await;
    assert!(err.contains("providers[0].upstream: http:// to a host that is not loopback"), "{err}");

    let ca = TestCa::new().unwrap();
    let cert = ca.issue(&["localhost"]).unwrap();
    let admin = format!(
        "\n[admin]\nlisten = \"0.0.0.0:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.cert_file.display(),
        cert.key_file.display()
    );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config(&rpc, &db, relayer, &admin)).unwrap();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let served = crate::serve::spawn_serve_with_admin(
        &path,
        &[("TG_STARTUP_RELAYER_KEY", "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".to_owned())],
        log.clone(),
    )
    .await;
    let admin_url = served.admin_url.expect("admin listener");
    assert!(admin_url.starts_with("https://0.0.0.0:"), "{admin_url}");
    assert!(!log.lock().unwrap().iter().any(|l| l.contains("WARNING admin.listen")), "no insecure warning");
    let port = admin_url.rsplit(':').next().unwrap();
    let resp = ca.http().get(format!("https://localhost:{port}/admin/whoami")).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED, "the admin API answers over TLS");
}
