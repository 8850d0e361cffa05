//! Readiness, fail-closed before forwarding, metrics and the upstream's refusal of our
//! credential.

use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_metering::EntryState;
use tollgate_test_support::{PaymentBuilder, v2_header};

use crate::harness::{Engine, Harness, Options, PRICE_ATOMIC, admin_token, receipt_of};

async fn harness(engine: Engine) -> Option<Harness> {
    Harness::start_with(engine, Options { health_interval_ms: 100, ..Options::default() }).await
}

async fn pay(h: &Harness, path: &str, b: &PaymentBuilder) -> reqwest::Response {
    h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(b)).send().await.unwrap()
}

async fn set_relayer_gas(h: &Harness, wei_hex: &str) {
    let relayer = format!("{:#x}", h.gateway.relayer().unwrap());
    h.chain.rpc("anvil_setBalance", json!([relayer, wei_hex])).await.unwrap();
}

async fn readyz(h: &Harness) -> (StatusCode, Value) {
    let resp = h.http.get(format!("{}/readyz", h.url)).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Polls `/readyz` (cached 1 s; the monitor checks every 100 ms) until it answers `status`.
async fn wait_ready(h: &Harness, status: StatusCode) -> Value {
    for _ in 0..100 {
        let (s, body) = readyz(h).await;
        if s == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {status}: {:?}", readyz(h).await);
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}: {body}"))
}

/// Uploads a version of the `vaulted` provider's credential (the harness file names it; it has
/// no version until then).
async fn upload_vault_credential(h: &Harness, secret: &str) {
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/providers/vaulted/credentials/main",
            Some(&h.operator),
            Some(json!({ "secret": secret })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

// Goal: /readyz lists each check and is 503 while a file-configured vault credential has no
// version (the gateway still starts: it is uploaded through the admin API), 200 once it has.
async fn readyz_lists_checks_and_waits_for_the_vault(h: &Harness) {
    let body = wait_ready(h, StatusCode::SERVICE_UNAVAILABLE).await;
    for name in ["database", "rpc:eip155:8453", "relayer_gas:eip155:8453", "control"] {
        assert_eq!(check(&body, name)["ok"], true, "{name}: {body}");
    }
    let vault = check(&body, "vault");
    assert_eq!(vault["ok"], false);
    assert!(vault["detail"].as_str().unwrap().contains("provider `vaulted` credential `main`"), "{vault}");
    upload_vault_credential(h, "vk-one").await;
    let body = wait_ready(h, StatusCode::OK).await;
    assert_eq!(body["ready"], true);
    assert!(!body.to_string().contains("vk-one"));
    let (s, _) = readyz(h).await;
    assert_eq!(s, StatusCode::OK);
}

// Goal: with the relayer unable to pay one settlement (anvil_setBalance 0), the unpaid request
// is answered 503 settlement_unavailable with Retry-After and the reason (no challenge), and a
// validly signed payment is refused 503 before anything is verified, reserved or forwarded:
// the upstream sees nothing and the ledger has no entry. Funded again, the gateway recovers
// and the same authorization pays once.
async fn relayer_out_of_gas_fails_closed(h: &Harness) {
    upload_vault_credential(h, "vk-one").await;
    wait_ready(h, StatusCode::OK).await;
    let b = h.payment("/weather/lima").await;
    let seen = h.upstream.calls();

    set_relayer_gas(h, "0x0").await;
    let body = wait_ready(h, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(check(&body, "relayer_gas:eip155:8453")["ok"], false, "{body}");
    // The monitor's verdict and /readyz come from the same check.
    let quote = h.http.get(format!("{}/weather/lima", h.url)).send().await.unwrap();
    assert_eq!(quote.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(quote.headers().contains_key("retry-after"));
    assert!(!quote.headers().contains_key("payment-required"), "no challenge is offered");
    let err: Value = quote.json().await.unwrap();
    assert_eq!(err["error"]["code"], "settlement_unavailable");
    assert!(err["error"]["message"].as_str().unwrap().contains("relayer_gas_low"), "{err}");

    let resp = pay(h, "/weather/lima", &b).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let receipt = receipt_of(&resp, "payment-response");
    assert!(!receipt.success);
    assert_eq!(receipt.transaction, "");
    assert_eq!(receipt.error_reason.as_deref(), Some("settlement_unavailable"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "settlement_unavailable");
    assert_eq!(h.upstream.calls(), seen, "nothing was forwarded");
    assert!(h.entry_for(&b).await.is_none(), "nothing was reserved");

    set_relayer_gas(h, "0x56BC75E2D63100000").await;
    wait_ready(h, StatusCode::OK).await;
    let resp = pay(h, "/weather/lima", &b).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(receipt_of(&resp, "payment-response").success);
    assert_eq!(h.upstream.calls(), seen + 1);
    assert_eq!(h.entry_for(&b).await.unwrap().state, EntryState::Settled);
}

/// The captured log lines (this process's, all tests) that contain every one of `parts`.
fn logged(parts: &[&str]) -> Vec<String> {
    let logs = crate::secrets::captured_logs();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    text.lines().filter(|l| parts.iter().all(|p| l.contains(p))).map(str::to_owned).collect()
}

// Goal: an upstream 401/403 while a credential was injected is answered 502
// upstream_credential_rejected (not the upstream's 401), the entry is voided (nothing charged)
// and the WARN names the provider and the credential's id and version, never its value; the
// call's one INFO line names its entry, route, payer and outcome.
async fn upstream_rejecting_our_credential_is_502_uncharged(h: &Harness) {
    crate::secrets::captured_logs();
    upload_vault_credential(h, "not-the-upstream-key").await;
    // An endpoint of `vaulted` whose upstream path checks the key: it refuses the vault's.
    let spec = json!({ "path": "/vaulted/weather/{city}", "price_atomic": PRICE_ATOMIC.to_string() });
    let (s, v) = h.admin(Method::PUT, "/admin/providers/vaulted/endpoints", Some(&h.operator), Some(spec)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let b = h.payment("/vaulted/weather/kyiv").await;
    let resp = pay(h, "/vaulted/weather/kyiv", &b).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_credential_rejected");
    assert!(!err.to_string().contains("missing or wrong API key"), "the upstream's body is not relayed");
    let entry = h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(entry.reason.as_deref(), Some("upstream_credential_rejected"));
    assert!(!h.chain.authorization_used(b.from, b.nonce).await.unwrap(), "never charged");
    let warn = logged(&["WARN", "rejected the injected credential", "provider=vaulted", "credential=vault:main"]);
    assert!(!warn.is_empty(), "the WARN line");
    assert!(warn.iter().any(|l| l.contains("credential_version=1")), "{warn:?}");
    let info =
        logged(&["INFO", "paid call", &format!("entry=\"{}\"", entry.id), "outcome=\"upstream_credential_rejected\""]);
    assert_eq!(info.len(), 1, "one line per paid call");
    let payer = format!("{:#x}", b.from);
    assert!(info[0].contains(&payer) && info[0].contains("route=vaulted:/vaulted/weather/{city}"), "{info:?}");
    assert!(info[0].contains("verify_ms=") && info[0].contains("upstream_ms="), "{info:?}");
    assert!(logged(&["not-the-upstream-key"]).is_empty(), "the credential is never logged");
}

// Goal: /metrics on the admin listener renders paid calls by route pattern, mode and outcome,
// the phase histograms, settlement latency, entries by state, the relayer, RPC calls by method,
// the audit queue, the control version and the counters; operators and finance may read it, a
// provider token may not; no payer address or concrete path appears.
async fn metrics_cover_a_paid_call(h: &Harness) {
    wait_ready(h, StatusCode::SERVICE_UNAVAILABLE).await; // one check done (vault not uploaded)
    let b = h.payment("/weather/lima").await;
    assert_eq!(pay(h, "/weather/lima", &b).await.status(), StatusCode::OK);
    // One junk payment: counted by reason (an empty family has no series to show).
    let junk = h.http.get(format!("{}/weather/lima", h.url)).header("payment-signature", "not-base64!").send().await;
    assert_eq!(junk.unwrap().status(), StatusCode::BAD_REQUEST);
    let resp = h.http.get(format!("{}/metrics", h.admin_url)).bearer_auth(&h.operator).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    for line in [
        r#"tollgate_paid_calls_total{route="weather:/weather/{city}",mode="after",outcome="ok"} 1"#,
        r#"tollgate_ledger_entries{state="settled"} 1"#,
        r#"tollgate_verify_seconds_count{route="weather:/weather/{city}"} 1"#,
        r#"tollgate_reserve_seconds_count{route="weather:/weather/{city}"} 1"#,
        r#"tollgate_upstream_seconds_count{route="weather:/weather/{city}"} 1"#,
        r#"tollgate_call_seconds_count{route="weather:/weather/{city}"} 2"#,
        r#"tollgate_settlement_receipt_seconds_count{network="eip155:8453"} 1"#,
        r#"tollgate_relayer_pending_transactions{network="eip155:8453"} 0"#,
        r#"tollgate_rpc_errors_total{network="eip155:8453",method="eth_sendRawTransaction"} 0"#,
        "tollgate_deferred_backlog 0",
        "tollgate_audit_queue_depth ",
        "tollgate_control_version ",
        "tollgate_settlements_pending_total 0",
        r#"tollgate_payment_attempts_unaudited_total{reason="malformed_payment"} 1"#,
        r#"tollgate_paid_calls_total{route="weather:/weather/{city}",mode="after",outcome="malformed_payment"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(text.contains(r#"tollgate_rpc_calls_total{network="eip155:8453",method="eth_chainId"}"#), "{text}");
    assert!(text.contains(r#"tollgate_relayer_balance_wei{network="eip155:8453"}"#), "{text}");
    assert!(!text.to_lowercase().contains(&format!("{:#x}", h.payer.address()).to_lowercase()), "no payer label");
    assert!(!text.contains("/weather/lima"), "no concrete path");
    // Every metric the documented Grafana dashboard queries exists.
    let dashboard = include_str!("../../../../docs/grafana-dashboard.json");
    for name in dashboard.split("tollgate_").skip(1).filter_map(|s| {
        let n: String = s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        (!n.is_empty()).then_some(n)
    }) {
        let base = name.trim_end_matches("_bucket").trim_end_matches("_total");
        assert!(text.contains(&format!("# TYPE tollgate_{base} ")), "the dashboard's tollgate_{name} is not exported");
    }
    let finance = admin_token(&h.gateway, tollgate_metering::Role::Finance, None).await;
    let s = h.http.get(format!("{}/metrics", h.admin_url)).bearer_auth(&finance).send().await.unwrap().status();
    assert_eq!(s, StatusCode::OK);
    let provider = admin_token(&h.gateway, tollgate_metering::Role::Provider, Some("weather")).await;
    let s = h.http.get(format!("{}/metrics", h.admin_url)).bearer_auth(&provider).send().await.unwrap().status();
    assert_eq!(s, StatusCode::FORBIDDEN);
    let s = h.http.get(format!("{}/metrics", h.admin_url)).send().await.unwrap().status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

macro_rules! fast_monitor {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(h) = harness(Engine::Sqlite).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = harness(Engine::Postgres).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
        }
    };
}

fast_monitor!(readyz_checks, readyz_lists_checks_and_waits_for_the_vault);
fast_monitor!(relayer_out_of_gas, relayer_out_of_gas_fails_closed);
fast_monitor!(credential_rejected, upstream_rejecting_our_credential_is_502_uncharged);
fast_monitor!(metrics, metrics_cover_a_paid_call);
