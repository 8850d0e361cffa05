//! Credentials: injected at call time, replacing the agent's, never in logs or responses.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use tollgate_test_support::v2_header;

use crate::{API_KEY, Engine, Harness};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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
fn captured_logs() -> Captured {
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
// in no response and in no log line (captured at TRACE) of paid, failed and refused calls.
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
    agent_saw.push_str(&format!("{:?}", h.gateway));
    agent_saw.push_str(&format!("{:?}", h.gateway.config));

    assert!(!agent_saw.contains(API_KEY), "credential leaked to the agent or Debug output");
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("paid call"), "log capture is live");
    assert!(!text.contains(API_KEY), "credential leaked into the logs");
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
