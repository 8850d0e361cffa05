//! Credentials: injected at call time, replacing the agent's, never in logs or responses.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use tollgate_test_support::v2_header;

use crate::harness::{API_KEY, Engine, Harness};

const VAULT_SECRET: &str = "vk-live-3b9d1f7a5c2e8b4d6f0a";
const VAULT_SECRET_2: &str = "vk-live-9e7c5a3b1d8f6e4c2a0b";

#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test process, at TRACE level, from the first call on.
pub(crate) fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init()
            .ok();
        logs
    })
    .clone()
}

// Goal: the agent's Authorization, Proxy-Authorization, Cookie and payment headers never
// reach the upstream; the injected credential replaces the agent's; the credential appears
// in no response and in no log line (captured at TRACE) of paid, failed and refused calls;
// the same for vault credentials through upload, rotation, use and every admin listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_is_injected_and_never_leaks() {
    let logs = captured_logs();
    let h = Harness::start(Engine::Sqlite).await.unwrap();
    let b = h.payment("/weather/berlin").await;
    let resp = h
        .http
        .get(format!("{}/weather/berlin", h.url))
        .header("authorization", "Bearer agent-own-token")
        .header("proxy-authorization", "Basic YWdlbnQ6cHc=")
        .header("cookie", "session=agent")
        .header("x-payment", "should-not-pass")
        .header("payment-signature", v2_header(&b))
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut agent_saw = format!("{:?}", resp.headers());
    agent_saw.push_str(&resp.text().await.unwrap());

    let seen = h.upstream.last();
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(seen.headers["authorization"], format!("Bearer {API_KEY}"));
    for stripped in ["proxy-authorization", "cookie", "x-payment", "payment-signature"] {
        assert!(!seen.headers.contains_key(stripped), "{stripped} reached the upstream");
    }
    assert_eq!(seen.headers["x-custom"], "kept");

    // Failures and refusals too.
    for path in ["/fail", "/weather/x"] {
        let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        agent_saw.push_str(&format!("{:?}", resp.headers()));
        agent_saw.push_str(&resp.text().await.unwrap());
    }
    let b = h.payment("/fail").await;
    let resp = h.http.get(format!("{}/fail", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    agent_saw.push_str(&resp.text().await.unwrap());
    // A vault credential: uploaded, listed, rotated, used, revoked.
    for (i, secret) in [VAULT_SECRET, VAULT_SECRET_2].iter().enumerate() {
        let (status, out) = h
            .admin(
                reqwest::Method::POST,
                "/admin/providers/vaulted/credentials/main",
                Some(&h.operator),
                Some(serde_json::json!({ "secret": secret })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        agent_saw.push_str(&out.to_string());
        let path = format!("/vaulted/anykey/{i}");
        let b = h.payment(&path).await;
        let resp =
            h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        agent_saw.push_str(&format!("{:?}", resp.headers()));
        agent_saw.push_str(&resp.text().await.unwrap());
    }
    assert_eq!(h.upstream.last().headers["authorization"], format!("Bearer {VAULT_SECRET_2}"));
    for path in ["/admin/providers/vaulted/credentials", "/admin/providers", "/admin/audit/export"] {
        let (_, out) = h.admin(reqwest::Method::GET, path, Some(&h.operator), None).await;
        agent_saw.push_str(&out.to_string());
    }
    agent_saw.push_str(&format!("{:?}", h.gateway));
    agent_saw.push_str(&format!("{:?}", h.gateway.config));
    agent_saw.push_str(&format!("{:?}", h.gateway.live.get()));

    for secret in [API_KEY, VAULT_SECRET, VAULT_SECRET_2] {
        assert!(!agent_saw.contains(secret), "credential leaked to the agent, the admin API or Debug output");
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("paid call"), "log capture is live");
    for secret in [API_KEY, VAULT_SECRET, VAULT_SECRET_2] {
        assert!(!text.contains(secret), "credential leaked into the logs");
    }
    h.stop().await;
}

// Goal: query-parameter and basic-auth injection reach the upstream, replacing any value
// the agent supplied under the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_basic_injection() {
    let h = Harness::start(Engine::Sqlite).await.unwrap();
    let b = h.payment("/viaquery/q/1").await;
    let resp = h
        .http
        .get(format!("{}/viaquery/q/1?api_key=agent-guess&units=si", h.url))
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    assert!(h.upstream.last().path_and_query.contains("units=si"));

    let b = h.payment("/viabasic/basic").await;
    let resp = h
        .http
        .get(format!("{}/viabasic/basic", h.url))
        .header("authorization", "Basic YWdlbnQ6Z3Vlc3M=")
        .header("payment-signature", v2_header(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    h.stop().await;
}
