//! Operational hygiene: payment attempts that never verified are counted, not audited; the
//! admin API takes its bearer scheme in any case.

use axum::http::StatusCode;
use base64::Engine as _;
use reqwest::Method;
use tollgate_test_support::{PaymentBuilder, random_key, v2_header};

use crate::both_engines;
use crate::harness::{Engine, Harness};

// Goal: 50 garbage or forged payment headers (not base64, malformed JSON, signed by a key that
// is not the payer, altered after signing, expired) leave the audit chain as it was and are
// counted instead, by reason; a payment that verified but is refused by policy (a revoked
// wallet) is still audited. None reaches the upstream.
async fn junk_payments_are_counted_not_audited(h: &Harness) {
    let path = "/weather/rome";
    let (_, before) = h.admin(Method::GET, "/admin/audit/verify", Some(&h.operator), None).await;
    let records_before = before["records"].as_u64().unwrap();
    let offer = h.offer(path).await;
    let forger = random_key();
    let mut headers = Vec::new();
    for i in 0..50 {
        headers.push(match i % 5 {
            0 => format!("not-base64-{i}!"),
            1 => base64::engine::general_purpose::STANDARD.encode(format!("{{\"x402Version\":2,\"n\":{i}}}")),
            2 => {
                // Claims to be the payer, signed by someone else.
                let mut b = PaymentBuilder::new(&offer, &forger, h.now);
                b.from = h.payer.address();
                v2_header(&b)
            }
            3 => {
                // The payer's signature over a smaller amount than the one presented.
                let mut b = h.payment(path).await;
                let signature = b.sign();
                b.value += alloy_primitives::U256::from(1u8);
                b.v2_with(signature).to_header().unwrap()
            }
            _ => {
                let mut b = h.payment(path).await;
                b.valid_before = h.now - 1;
                v2_header(&b)
            }
        });
    }
    for header in &headers {
        let resp = h.http.get(format!("{}{path}", h.url)).header("payment-signature", header).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{}: {}", resp.status(), resp.text().await.unwrap());
    }
    assert_eq!(h.gateway.counters.unaudited_attempts(), 50);
    let reasons = h.gateway.counters.snapshot();
    assert!(reasons.len() >= 3, "counted by reason: {reasons:?}");
    assert_eq!(reasons.iter().map(|(_, _, n)| n).sum::<u64>(), 50);
    assert_eq!(h.upstream.calls(), 0);

    // A verified payment refused by policy: audited, not counted.
    let wallet = format!("{:#x}", h.payer.address());
    let (s, _) = h.admin(Method::POST, &format!("/admin/wallets/{wallet}/revoke"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let b = h.payment(path).await;
    let resp = h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.gateway.counters.unaudited_attempts(), 50);
    // The writer is FIFO: once the revoked attempt's record is in, anything queued before it is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let records = loop {
        let (_, v) = h.admin(Method::GET, "/admin/audit", Some(&h.operator), None).await;
        let records = v["records"].as_array().cloned().unwrap_or_default();
        if !records.is_empty() || std::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "wallet_revoked");
    let (_, after) = h.admin(Method::GET, "/admin/audit/verify", Some(&h.operator), None).await;
    assert_eq!(after["records"].as_u64().unwrap(), records_before + 1, "{after}");
    assert_eq!(after["intact"], true);
}
both_engines!(junk_not_audited, junk_payments_are_counted_not_audited);

// Goal: the admin API accepts the Authorization scheme in any case (RFC 9110), and still
// refuses another scheme carrying a valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bearer_scheme_is_case_insensitive() {
    let Some(h) = Harness::start(Engine::Sqlite).await else { return };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = h
            .http
            .get(format!("{}/admin/whoami", h.admin_url))
            .header("authorization", format!("{scheme} {}", h.operator))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let resp = h
        .http
        .get(format!("{}/admin/whoami", h.admin_url))
        .header("authorization", format!("Basic {}", h.operator))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    h.stop().await;
}
