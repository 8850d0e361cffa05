//! The control plane end to end: admin API permissions, wallet policies at the paid call,
//! credential rotation from the vault, price versions, the audit trail, bad admin input, and
//! propagation to a replica sharing the database.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_metering::{EntryState, Role};
use tollgate_test_support::v2_header;

use crate::both_engines;
use crate::harness::{Harness, PRICE_ATOMIC, admin_call, admin_token};

/// Who may call a route: `(method, path, operator, provider (own), finance)`. A provider
/// route is tried with another provider's token too; it must be refused.
const MATRIX: &[(&str, &str, bool, bool, bool)] = &[
    ("GET", "/admin/openapi.json", true, true, true),
    ("GET", "/metrics", true, false, true),
    ("GET", "/admin/whoami", true, true, true),
    ("GET", "/admin/tokens", true, false, false),
    ("POST", "/admin/tokens", true, false, false),
    ("POST", "/admin/tokens/{id}/revoke", true, false, false),
    ("GET", "/admin/providers", true, true, false),
    ("PUT", "/admin/providers/{id}", true, false, false),
    ("DELETE", "/admin/providers/{id}", true, false, false),
    ("GET", "/admin/providers/{id}/endpoints", true, true, false),
    ("PUT", "/admin/providers/{id}/endpoints", true, true, false),
    ("PATCH", "/admin/providers/{id}/endpoints", true, true, false),
    ("DELETE", "/admin/providers/{id}/endpoints", true, true, false),
    ("POST", "/admin/providers/{id}/endpoints/disable", true, true, false),
    ("POST", "/admin/providers/{id}/endpoints/enable", true, true, false),
    ("GET", "/admin/providers/{id}/endpoints/prices", true, true, true),
    ("GET", "/admin/providers/{id}/credentials", true, true, false),
    ("POST", "/admin/providers/{id}/credentials/{name}", true, true, false),
    ("POST", "/admin/providers/{id}/credentials/{name}/{version}/revoke", true, true, false),
    ("GET", "/admin/providers/{id}/revenue", true, true, true),
    ("GET", "/admin/wallets", true, true, false),
    ("PUT", "/admin/wallets/{wallet}", true, true, false),
    ("POST", "/admin/wallets/{wallet}/revoke", true, true, false),
    ("POST", "/admin/wallets/{wallet}/reinstate", true, true, false),
    ("GET", "/admin/settings", true, false, false),
    ("PUT", "/admin/settings", true, false, false),
    ("GET", "/admin/audit", true, true, true),
    ("GET", "/admin/audit/export", true, true, true),
    ("GET", "/admin/audit/verify", true, false, true),
    ("GET", "/admin/ledger/entries", true, true, true),
    ("GET", "/admin/ledger/entries/{id}/events", true, true, true),
    ("POST", "/admin/reconcile", true, false, true),
    ("GET", "/admin/reconcile/runs", true, false, true),
    ("GET", "/admin/reconcile/runs/{id}/exceptions", true, false, true),
    ("GET", "/admin/reconcile/exceptions/{id}/notes", true, false, true),
    ("POST", "/admin/reconcile/exceptions/{id}/notes", true, false, true),
];

/// The concrete path of a route for provider `weather`, with the query that makes a
/// provider-scoped read name that provider (so another provider's token must be refused).
fn concrete(path: &str) -> String {
    let p = path
        .replace("{id}", "weather")
        .replace("{name}", "main")
        .replace("{version}", "1")
        .replace("{wallet}", "0x00000000000000000000000000000000000000aa");
    match path {
        "/admin/wallets"
        | "/admin/wallets/{wallet}"
        | "/admin/wallets/{wallet}/revoke"
        | "/admin/wallets/{wallet}/reinstate" => format!("{p}?scope=weather"),
        "/admin/audit" | "/admin/audit/export" | "/admin/ledger/entries" => format!("{p}?provider=weather"),
        "/admin/providers/{id}/endpoints/prices" => format!("{p}?path=/weather/%7Bcity%7D"),
        _ => p,
    }
}

// Goal: the permission matrix covers every admin route; each route refuses a missing, an
// unknown and a revoked token (401), every role it does not allow (403), and another
// provider's token where it is provider-scoped (403).
async fn admin_routes_enforce_roles(h: &Harness) {
    let routes: Vec<(&str, &str)> = MATRIX.iter().map(|(m, p, ..)| (*m, *p)).collect();
    let table: Vec<(&str, &str)> = tollgate_admin_api::ROUTES.iter().map(|r| (r.method.as_str(), r.path)).collect();
    assert_eq!(routes, table, "the matrix must list every admin route");
    // The table's roles (the document's x-roles) are the ones the gateway enforces.
    for ((_, path, operator, own, fin), route) in MATRIX.iter().zip(tollgate_admin_api::ROUTES) {
        use tollgate_admin_api::Role as R;
        let roles = [(R::Operator, *operator), (R::Provider, *own), (R::Finance, *fin)];
        let allowed: Vec<R> = roles.iter().filter(|(_, ok)| *ok).map(|(r, _)| *r).collect();
        let mut listed = route.roles.to_vec();
        listed.sort_by_key(|r| r.as_str());
        let mut allowed = allowed;
        allowed.sort_by_key(|r| r.as_str());
        assert_eq!(listed, allowed, "{path}: the route table's roles");
    }
    let provider = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let other = admin_token(&h.gateway, Role::Provider, Some("vaulted")).await;
    let finance = admin_token(&h.gateway, Role::Finance, None).await;
    let revoked = admin_token(&h.gateway, Role::Finance, None).await;
    let (_, who) = h.admin(Method::GET, "/admin/whoami", Some(&revoked), None).await;
    let id = who["token_id"].as_str().unwrap().to_owned();
    let (s, _) = h.admin(Method::POST, &format!("/admin/tokens/{id}/revoke"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let unknown = format!("tgadm_{}", "ab".repeat(32));
    for (method, path, operator, own, fin) in MATRIX {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let url = concrete(path);
        for (label, token) in [("missing", None), ("unknown", Some(unknown.as_str())), ("revoked", Some(&revoked))] {
            let (s, body) = h.admin(m.clone(), &url, token, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path} with a {label} token");
            assert_eq!(body["error"]["code"], "admin_unauthorized");
        }
        for (allowed, role, token) in
            [(*operator, "operator", &h.operator), (*own, "provider", &provider), (*fin, "finance", &finance)]
        {
            if !allowed {
                let (s, body) = h.admin(m.clone(), &url, Some(token), None).await;
                assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} as {role}: {body}");
                assert_eq!(body["error"]["code"], "admin_forbidden");
            }
        }
        let scoped = path.contains("{id}") || url.contains("=weather");
        if *own && scoped {
            let (s, body) = h.admin(m.clone(), &url, Some(&other), None).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} with another provider's token: {body}");
        }
    }
    // Tokens are never listed in clear.
    let (_, list) = h.admin(Method::GET, "/admin/tokens", Some(&h.operator), None).await;
    let text = list.to_string();
    assert!(!text.contains(&provider) && !text.contains(&h.operator) && !text.contains("token_hash"));
}
both_engines!(admin_roles, admin_routes_enforce_roles);

async fn pay(h: &Harness, path: &str) -> (reqwest::Response, tollgate_test_support::PaymentBuilder) {
    let b = h.payment(path).await;
    let resp = h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    (resp, b)
}

// Goal: a revoked wallet is refused with 403 wallet_revoked on the very next request, before
// anything reaches the upstream or the ledger; reinstating lets it pay again; both attempts are
// in the audit trail (denied with the reason, accepted with entry, price version and tx).
async fn revoked_wallet_is_denied_at_once(h: &Harness) {
    let wallet = format!("{:#x}", h.payer.address());
    let (resp, _) = pay(h, "/weather/oslo").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = h.admin(Method::POST, &format!("/admin/wallets/{wallet}/revoke"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let calls = h.upstream.calls();
    let (resp, b) = pay(h, "/weather/oslo").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wallet_revoked");
    assert_eq!(h.upstream.calls(), calls, "a revoked wallet's call never reaches the upstream");
    assert!(h.entry_for(&b).await.is_none(), "nothing reserved");
    let (s, _) = h.admin(Method::POST, &format!("/admin/wallets/{wallet}/reinstate"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let (resp, b) = pay(h, "/weather/oslo").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let entry = h.entry_for(&b).await.unwrap();
    assert!(entry.price_version.is_some());
    assert_eq!(entry.credential.as_deref(), Some("env:TEST_API_KEY"));

    let records = wait_audit(h, &format!("/admin/audit?wallet={wallet}"), 3).await;
    assert_eq!(records[0]["decision"], "accepted");
    assert_eq!(records[1]["decision"], "denied");
    assert_eq!(records[1]["reason"], "wallet_revoked");
    assert!(records[1]["entry_id"].is_null());
    let last = &records[2];
    assert_eq!(last["decision"], "accepted");
    assert_eq!(last["reason"], "ok");
    assert_eq!(last["entry_id"], entry.id.to_string());
    assert_eq!(last["tx_hash"], entry.tx_hash.map(|t| format!("{t:#x}")).unwrap());
    assert_eq!(last["price_version"], entry.price_version.unwrap());
    assert_eq!(last["upstream_status"], 200);
    assert_eq!(last["endpoint"], "weather:/weather/{city}");
    assert_eq!(last["path"], "/weather/oslo");
    let (_, v) = h.admin(Method::GET, "/admin/audit/verify", Some(&h.operator), None).await;
    assert_eq!(v["intact"], true, "{v}");
}
both_engines!(wallet_revocation, revoked_wallet_is_denied_at_once);

/// Polls the audit query until it returns at least `n` records (the writer is asynchronous).
async fn wait_audit(h: &Harness, query: &str, n: usize) -> Vec<Value> {
    // Generous: the writer batches, and a loaded CI box can be slow to commit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = h.admin(Method::GET, query, Some(&h.operator), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let records = body["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= n || Instant::now() > deadline {
            assert!(records.len() >= n, "audit records: {records:?}");
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Goal: the audit trail agrees with the ledger: a call the ledger voided after the upstream
// answered 500 is audited `denied` with the ledger's cause (`upstream_5xx`), not
// `accepted`/`ok`; a served call is `accepted`/`ok`; a payment refused for want of balance
// after its signature verified is audited `denied` under its payer (not a null wallet); and
// every record keeps the milliseconds of the gateway's clock.
async fn audit_agrees_with_the_ledger(h: &Harness) {
    let at_ms = h.now * 1000 + 257;
    h.clock.set_ms(at_ms);
    let (resp, failed) = pay(h, "/fail").await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let entry = h.entry_for(&failed).await.unwrap();
    assert_eq!((entry.state, entry.reason.as_deref()), (EntryState::Voided, Some("upstream_5xx")));
    let (resp, _) = pay(h, "/weather/oslo").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let poor = tollgate_test_support::random_key();
    let unfunded = tollgate_test_support::PaymentBuilder::new(&h.offer("/weather/oslo").await, &poor, h.now);
    let resp = h
        .http
        .get(format!("{}/weather/oslo", h.url))
        .header("payment-signature", v2_header(&unfunded))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_exact_evm_insufficient_balance", "{body}");

    let records = wait_audit(h, "/admin/audit", 3).await;
    let voided = records.iter().find(|r| r["entry_id"] == entry.id.to_string()).unwrap();
    assert_eq!((voided["decision"].clone(), voided["reason"].clone()), (json!("denied"), json!("upstream_5xx")));
    assert_eq!(voided["upstream_status"], 500, "{voided}");
    let served = records.iter().find(|r| r["path"] == "/weather/oslo" && r["entry_id"].is_string()).unwrap();
    assert_eq!((served["decision"].clone(), served["reason"].clone()), (json!("accepted"), json!("ok")));
    let poor_record = records.iter().find(|r| r["entry_id"].is_null()).expect("the low-balance denial is audited");
    assert_eq!(poor_record["decision"], "denied");
    assert_eq!(poor_record["reason"], "invalid_exact_evm_insufficient_balance");
    let wallet = poor_record["wallet"].as_str().unwrap_or_default().to_lowercase();
    assert_eq!(wallet, format!("{:#x}", poor.address()), "{poor_record}");
    assert!(records.iter().all(|r| r["at_unix_ms"] == at_ms), "milliseconds kept: {records:?}");
    let (_, v) = h.admin(Method::GET, "/admin/audit/verify", Some(&h.operator), None).await;
    assert_eq!(v["intact"], true, "{v}");
}
both_engines!(audit_coherence, audit_agrees_with_the_ledger);

// Goal: refunds owed are listed: a `before` call whose upstream failed after settlement is
// `refund_owed`, the ledger view filtered by that state lists exactly it (amount in USDC with
// its atomic integer), its audit record is `accepted` (the money moved) with the ledger's
// cause, and an unknown state is 400 invalid_request.
async fn refunds_owed_are_listed(h: &Harness) {
    assert_eq!(pay(h, "/weather/oslo").await.0.status(), StatusCode::OK);
    let (resp, owed) = pay(h, "/before/fail").await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let entry = h.wait_state(&owed, EntryState::RefundOwed).await;
    let finance = admin_token(&h.gateway, Role::Finance, None).await;
    let (s, list) = h.admin(Method::GET, "/admin/ledger/entries?state=refund_owed", Some(&finance), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let entries = list["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["id"], entry.id.to_string());
    assert_eq!((entries[0]["amount"].clone(), entries[0]["amount_atomic"].clone()), (json!("0.001"), json!("1000")));
    let (s, bad) = h.admin(Method::GET, "/admin/ledger/entries?state=owed", Some(&finance), None).await;
    assert_eq!((s, bad["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_request")));
    let records = wait_audit(h, "/admin/audit", 2).await;
    let record = records.iter().find(|r| r["entry_id"] == entry.id.to_string()).unwrap();
    assert_eq!((record["decision"].clone(), record["reason"].clone()), (json!("accepted"), json!("upstream_5xx")));
}
both_engines!(refunds_owed, refunds_owed_are_listed);

fn injected(h: &Harness) -> String {
    h.upstream.last().headers["authorization"].to_str().unwrap().to_owned()
}

// Goal: a vault credential is refused (503, nothing charged) until uploaded; an upload is
// used on the next request and recorded by version on the ledger entry; a rotation switches
// the next request to the new version with no restart; revoking the newest falls back to the
// previous one; the secret never appears in an admin response; a provider token cannot
// touch another provider's credentials.
async fn vault_rotation_applies_on_next_request(h: &Harness) {
    // No usable version: refused before anything is quoted, so nothing can be paid.
    let resp = h.http.get(format!("{}/vaulted/anykey/1", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "credential_unavailable");
    let provider = admin_token(&h.gateway, Role::Provider, Some("vaulted")).await;
    let upload = |secret: &str| json!({ "secret": secret });
    let (s, v) = h
        .admin(Method::POST, "/admin/providers/vaulted/credentials/main", Some(&provider), Some(upload("vk-one")))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    assert!(!v.to_string().contains("vk-one"));
    let (resp, b) = pay(h, "/vaulted/anykey/2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(injected(h), "Bearer vk-one");
    let e = h.entry_for(&b).await.unwrap();
    assert_eq!((e.credential.as_deref(), e.credential_version), (Some("vault:main"), Some(1)));

    let (s, v) = h
        .admin(Method::POST, "/admin/providers/vaulted/credentials/main", Some(&provider), Some(upload("vk-two")))
        .await;
    assert_eq!((s, v["version"].clone()), (StatusCode::OK, json!(2)));
    let (resp, b) = pay(h, "/vaulted/anykey/3").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(injected(h), "Bearer vk-two");
    assert_eq!(h.entry_for(&b).await.unwrap().credential_version, Some(2));

    let (s, _) =
        h.admin(Method::POST, "/admin/providers/vaulted/credentials/main/2/revoke", Some(&provider), None).await;
    assert_eq!(s, StatusCode::OK);
    let (resp, _) = pay(h, "/vaulted/anykey/4").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(injected(h), "Bearer vk-one", "revoking the newest version falls back to the previous");

    let (s, list) = h.admin(Method::GET, "/admin/providers/vaulted/credentials", Some(&provider), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains("vk-one") && !text.contains("vk-two") && !text.contains("ciphertext"), "{text}");
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2);
    let stored: Vec<String> = h
        .gateway
        .ledger
        .catalog()
        .credential_versions(Some("vaulted"))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.ciphertext)
        .collect();
    assert!(stored.iter().all(|c| !c.contains(&hex::encode("vk-one")) && !c.contains(&hex::encode("vk-two"))));

    let weather = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let (s, _) =
        h.admin(Method::POST, "/admin/providers/vaulted/credentials/main", Some(&weather), Some(upload("evil"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both_engines!(vault_rotation, vault_rotation_applies_on_next_request);

// Goal: a price change through the admin API makes a new price version, quoted by the next
// 402 and recorded on the next ledger entry; the version history keeps both.
async fn price_change_makes_a_new_version(h: &Harness) {
    let (resp, b) = pay(h, "/weather/rome").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let first = h.entry_for(&b).await.unwrap().price_version.unwrap();
    let spec = json!({ "path": "/weather/{city}", "price_atomic": "2500", "description": "Weather" });
    let (s, v) = h.admin(Method::PUT, "/admin/providers/weather/endpoints", Some(&h.operator), Some(spec)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["new_price_version"], true);
    let second = v["price_version"].as_u64().unwrap();
    assert!(second > first);
    let offer = h.offer("/weather/rome").await;
    assert_eq!(offer.amount.to_string(), "2500");
    let (resp, b) = pay(h, "/weather/rome").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let e = h.entry_for(&b).await.unwrap();
    assert_eq!((e.price_version, e.amount.get()), (Some(second), 2500));
    let (_, history) = h
        .admin(
            Method::GET,
            "/admin/providers/weather/endpoints/prices?path=/weather/%7Bcity%7D",
            Some(&h.operator),
            None,
        )
        .await;
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(versions[0]["prices"][0]["amount"], PRICE_ATOMIC.to_string());
    assert_eq!(versions[1]["prices"][0]["amount"], "2500");
    // Disabling the endpoint removes it at once: 404, never a 402.
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/providers/weather/endpoints/disable",
            Some(&h.operator),
            Some(json!({ "path": "/weather/{city}" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
both_engines!(price_versions, price_change_makes_a_new_version);

// Goal: a wallet's daily cap and scope are enforced at the paid call with their 403 codes, and
// a provider token can set a policy only in its own scope and for its own endpoints.
async fn caps_and_scopes_at_the_paid_call(h: &Harness) {
    let wallet = format!("{:#x}", h.payer.address());
    let policy = json!({ "daily_cap": (2 * PRICE_ATOMIC).to_string() });
    let (s, v) =
        h.admin(Method::PUT, &format!("/admin/wallets/{wallet}?scope=weather"), Some(&h.operator), Some(policy)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..2 {
        assert_eq!(pay(h, "/weather/kyiv").await.0.status(), StatusCode::OK);
    }
    let (resp, _) = pay(h, "/weather/kyiv").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "daily_cap_exceeded");
    // Another provider is not covered by weather's cap.
    let provider = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let scoped = json!({ "endpoints": ["weather:/echo"] });
    let (s, _) = h.admin(Method::PUT, &format!("/admin/wallets/{wallet}"), Some(&provider), Some(scoped.clone())).await;
    assert_eq!(s, StatusCode::OK, "a provider's policy lands in its own scope");
    let (resp, _) = pay(h, "/weather/kyiv").await;
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "endpoint_not_in_wallet_scope");
    let foreign = json!({ "endpoints": ["vaulted:/vaulted/anykey/{x}"] });
    let (s, body) = h.admin(Method::PUT, &format!("/admin/wallets/{wallet}"), Some(&provider), Some(foreign)).await;
    assert_eq!((s, body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_request")));
    let (s, _) = h.admin(Method::PUT, &format!("/admin/wallets/{wallet}?scope=*"), Some(&provider), Some(scoped)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both_engines!(caps_and_scopes, caps_and_scopes_at_the_paid_call);

// Goal: bad admin input gets 400 invalid_request naming the field — invalid address, malformed
// and negative prices, unknown fields, an oversized body — and nothing is applied.
async fn bad_admin_input_is_refused_whole(h: &Harness) {
    let before = h.gateway.ledger.settings().state().await.unwrap().version;
    let op = Some(h.operator.as_str());
    let cases: Vec<(Method, &str, Value, &str)> = vec![
        (
            Method::PUT,
            "/admin/providers/newco",
            json!({ "pay_to": "0x1234", "upstream": "http://127.0.0.1:9" }),
            "pay_to",
        ),
        (
            Method::PUT,
            "/admin/providers/newco",
            json!({ "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "upstream": "http://x", "colour": 1 }),
            "colour",
        ),
        (
            Method::PUT,
            "/admin/providers/newco",
            json!({ "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "upstream": "http://127.0.0.1:9",
                    "credential": { "inject": "header", "secret_env": "HOME" } }),
            "credential.vault",
        ),
        (Method::PUT, "/admin/providers/weather/endpoints", json!({ "path": "/w/x", "price": "-1" }), "price"),
        (Method::PUT, "/admin/providers/weather/endpoints", json!({ "path": "/w/x", "price": "1.2.3" }), "price"),
        (Method::PUT, "/admin/providers/weather/endpoints", json!({ "path": "/w/../x", "price": "1" }), "path"),
        (Method::PUT, "/admin/providers/weather/endpoints", json!({ "path": "/w/x", "price": 1 }), "price"),
        (Method::PUT, "/admin/wallets/0xnothex", json!({}), "wallet"),
        (
            Method::PUT,
            "/admin/wallets/0x00000000000000000000000000000000000000aa",
            json!({ "daily_cap": "-5" }),
            "daily_cap",
        ),
        (Method::PUT, "/admin/settings", json!({ "allowlist_mode": "yes" }), "allowlist_mode"),
        (Method::POST, "/admin/tokens", json!({ "role": "root" }), "role"),
        (Method::POST, "/admin/tokens", json!({ "role": "finance", "label": "a\u{0}b" }), "label"),
        (Method::PUT, "/admin/providers/weather/endpoints", json!({ "path": "/w/\u{1}", "price": "1" }), "path"),
        (Method::GET, "/admin/providers/weather/revenue?to_unix_s=9223372036854775808", Value::Null, "to_unix_s"),
        (Method::GET, "/admin/audit?after_seq=18446744073709551615", Value::Null, "after_seq"),
        (Method::GET, "/admin/audit?provider=a%00b", Value::Null, "provider"),
        (Method::POST, "/admin/tokens/zz/revoke", Value::Null, "id"),
    ];
    for (m, path, body, field) in cases {
        let (s, out) = h.admin(m.clone(), path, op, (!body.is_null()).then(|| body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {path} {body}: {out}");
        assert_eq!(out["error"]["code"], "invalid_request");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{m} {path}: `{message}` should name `{field}`");
    }
    let huge = json!({ "secret": "x".repeat(100 * 1024) });
    let (s, out) = h.admin(Method::POST, "/admin/providers/vaulted/credentials/main", op, Some(huge)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("body"));
    assert_eq!(h.gateway.ledger.settings().state().await.unwrap().version, before, "nothing was applied");
    assert!(h.gateway.ledger.catalog().providers().await.unwrap().iter().all(|p| p.id != "newco"));
}
both_engines!(bad_admin_input, bad_admin_input_is_refused_whole);

// Goal: a replica sharing the database (its own pool, its own snapshot) applies a revocation
// and a credential rotation made through the other gateway's admin API within one second.
async fn replica_sees_changes_within_a_second(h: &Harness) {
    let (_replica, replica_url, _admin, _stop) = h.start_replica_with_admin().await;
    let wallet = format!("{:#x}", h.payer.address());
    let pay_at = |base: String, path: &'static str| async move {
        let b = h.payment(path).await;
        h.http.get(format!("{base}{path}")).header("payment-signature", v2_header(&b)).send().await.unwrap()
    };
    assert_eq!(pay_at(replica_url.clone(), "/weather/lima").await.status(), StatusCode::OK);
    let (s, _) = h.admin(Method::POST, &format!("/admin/wallets/{wallet}/revoke"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK);
    let changed = Instant::now();
    let r = pay_at(replica_url.clone(), "/weather/lima").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "policies are read at reservation: no delay at all");
    assert!(changed.elapsed() < Duration::from_secs(1));
    h.admin(Method::POST, &format!("/admin/wallets/{wallet}/reinstate"), Some(&h.operator), None).await;

    let upload = |s: &str| Some(json!({ "secret": s }));
    h.admin(Method::POST, "/admin/providers/vaulted/credentials/main", Some(&h.operator), upload("rk-1")).await;
    // Wait for the replica to serve version 1, then rotate and time how long it takes to switch.
    wait_injected(h, &replica_url, "Bearer rk-1", Duration::from_secs(5)).await;
    h.admin(Method::POST, "/admin/providers/vaulted/credentials/main", Some(&h.operator), upload("rk-2")).await;
    let rotated = Instant::now();
    let b = wait_injected(h, &replica_url, "Bearer rk-2", Duration::from_secs(1)).await;
    let took = rotated.elapsed();
    assert!(took < Duration::from_secs(1), "rotation reached the replica after {took:?}");
    let entry = h.entry_for(&b).await.unwrap();
    assert_eq!((entry.state, entry.credential_version), (EntryState::Settled, Some(2)));
}

/// Pays the vaulted route on `base` until the upstream sees `expected` (or the deadline).
async fn wait_injected(
    h: &Harness,
    base: &str,
    expected: &str,
    within: Duration,
) -> tollgate_test_support::PaymentBuilder {
    let deadline = Instant::now() + within;
    let mut n = 0u32;
    loop {
        n += 1;
        let path = format!("/vaulted/anykey/w{n}");
        let b = h.payment(&path).await;
        let r = h.http.get(format!("{base}{path}")).header("payment-signature", v2_header(&b)).send().await.unwrap();
        if r.status() == StatusCode::OK && injected(h) == expected {
            return b;
        }
        assert!(Instant::now() < deadline, "{base} still injects {} (status {})", injected(h), r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
both_engines!(replica_propagation, replica_sees_changes_within_a_second);

// Goal: the audit export is JSON lines of every record; a finance token can verify the chain
// and read the ledger but not change anything; a provider token sees only its own records; a
// replay of a used authorization is counted, not audited (anyone who saw the header can resend
// it for free).
async fn audit_export_and_views(h: &Harness) {
    pay(h, "/weather/nice").await;
    let b = h.payment("/weather/nice").await;
    let header = v2_header(&b);
    for _ in 0..2 {
        h.http.get(format!("{}/weather/nice", h.url)).header("payment-signature", header.clone()).send().await.unwrap();
    }
    assert_eq!(h.gateway.counters.unaudited_attempts(), 1, "the replay is counted");
    wait_audit(h, "/admin/audit", 2).await;
    let finance = admin_token(&h.gateway, Role::Finance, None).await;
    let resp = h
        .http
        .get(format!("{}/admin/audit/export?provider=weather", h.admin_url))
        .bearer_auth(&finance)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["decision"] == "accepted"), "{lines:?}");
    let (_, v) = h.admin(Method::GET, "/admin/audit/verify", Some(&finance), None).await;
    assert_eq!((v["intact"].clone(), v["records"].clone()), (json!(true), json!(2)));
    let (s, entries) = h.admin(Method::GET, "/admin/ledger/entries", Some(&finance), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(entries["entries"][0].get("payment").is_none(), "the signed payment is not shown");
    let other = admin_token(&h.gateway, Role::Provider, Some("vaulted")).await;
    let (_, mine) = admin_call(&h.http, &h.admin_url, Method::GET, "/admin/audit", Some(&other), None).await;
    assert_eq!(mine["records"].as_array().unwrap().len(), 0, "vaulted has no records");
}
both_engines!(audit_views, audit_export_and_views);

// Goal: finance reconciles over the admin API: a run by blocks returns the report (matched
// calls and a plain transfer to the payee listed as an exception), the run is listed, its
// exceptions are readable, a note is appended with the token as author, and CSV is served
// (items with their block time, and the totals per period); every amount — report, runs,
// exceptions, revenue, ledger entries — is USDC in token units with the atomic integer
// beside it, never hex; a provider token may not run it.
async fn finance_reconciles_over_the_api(h: &Harness) {
    let head = || async { h.gateway.verifier.chain(8453).unwrap().block_number().await.unwrap() };
    let from = head().await + 1;
    for city in ["a", "b"] {
        assert_eq!(pay(h, &format!("/weather/{city}")).await.0.status(), StatusCode::OK);
    }
    h.chain.fund_gas(h.payer.address()).await.unwrap();
    let plain =
        tollgate_test_support::TokenCall::transferCall { to: h.payee, value: alloy_primitives::U256::from(7u64) };
    use alloy_sol_types::SolCall as _;
    h.chain.send_as(h.payer.clone(), h.chain.token, plain.abi_encode()).await.unwrap();
    let to = head().await;
    let finance = admin_token(&h.gateway, Role::Finance, None).await;
    let range = json!({ "from_block": from, "to_block": to, "confirmations": 1 });
    let (s, report) = h.admin(Method::POST, "/admin/reconcile", Some(&finance), Some(range.clone())).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["counts"]["matched"], 2, "{report}");
    assert_eq!(report["counts"]["onchain_missing_in_ledger"], 1, "{report}");
    assert_eq!(report["totals"]["matched"], "0.002", "{report}");
    assert_eq!(report["totals"]["matched_atomic"], (2 * PRICE_ATOMIC).to_string());
    assert_eq!(report["totals"]["chain"], "0.002007");
    assert_eq!(report["symbol"], "USDC");
    let run_id = report["run_id"].as_i64().unwrap();

    let (_, runs) = h.admin(Method::GET, "/admin/reconcile/runs", Some(&finance), None).await;
    let run = runs["runs"].as_array().unwrap().iter().find(|r| r["id"] == run_id).cloned().unwrap();
    assert_eq!((run["chain_total"].clone(), run["chain_total_atomic"].clone()), (json!("0.002007"), json!("2007")));
    assert_eq!((run["matched_total"].clone(), run["symbol"].clone()), (json!("0.002"), json!("USDC")), "{run}");
    let (_, ex) =
        h.admin(Method::GET, &format!("/admin/reconcile/runs/{run_id}/exceptions"), Some(&finance), None).await;
    let exceptions = ex["exceptions"].as_array().unwrap();
    assert_eq!(exceptions.len(), 1, "{ex}");
    let plain = &exceptions[0];
    assert_eq!((plain["amount_chain"].clone(), plain["amount_chain_atomic"].clone()), (json!("0.000007"), json!("7")));
    assert!(plain["amount_ledger"].is_null() && plain["amount_ledger_atomic"].is_null(), "{plain}");
    assert!(!ex.to_string().contains("\"0x7\""), "no hex amounts: {ex}");
    let (_, revenue) = h.admin(Method::GET, "/admin/providers/weather/revenue", Some(&finance), None).await;
    let settled = revenue["lines"].as_array().unwrap().iter().find(|l| l["state"] == "settled").cloned().unwrap();
    assert_eq!((settled["amount"].clone(), settled["amount_atomic"].clone()), (json!("0.002"), json!("2000")));
    assert_eq!(settled["symbol"], "USDC", "{revenue}");
    let (_, entries) = h.admin(Method::GET, "/admin/ledger/entries?provider=weather", Some(&finance), None).await;
    let entry = &entries["entries"][0];
    assert_eq!((entry["amount"].clone(), entry["amount_atomic"].clone()), (json!("0.001"), json!("1000")), "{entry}");
    let ex_id = exceptions[0]["id"].as_i64().unwrap();
    let note = json!({ "why": "customer top-up, booked manually" });
    let (s, n) =
        h.admin(Method::POST, &format!("/admin/reconcile/exceptions/{ex_id}/notes"), Some(&finance), Some(note)).await;
    assert_eq!(s, StatusCode::OK, "{n}");
    let (_, notes) =
        h.admin(Method::GET, &format!("/admin/reconcile/exceptions/{ex_id}/notes"), Some(&finance), None).await;
    assert_eq!(notes["notes"][0]["why"], "customer top-up, booked manually");
    assert!(notes["notes"][0]["who"].as_str().unwrap().starts_with("token:"));
    let (s, _) = h
        .admin(Method::POST, "/admin/reconcile/exceptions/999999/notes", Some(&finance), Some(json!({ "why": "x" })))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let csv = h
        .http
        .post(format!("{}/admin/reconcile?format=csv", h.admin_url))
        .bearer_auth(&finance)
        .json(&range)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv");
    let text = csv.text().await.unwrap();
    let matched: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with("matched,")).collect();
    assert_eq!(matched.len(), 2, "{text}");
    for row in matched {
        let time = row.split(',').nth(1).unwrap();
        assert!(tollgate_recon::parse_time(time).is_ok() && time.ends_with('Z'), "block time: {row}");
    }
    let totals = h
        .http
        .post(format!("{}/admin/reconcile?format=totals_csv", h.admin_url))
        .bearer_auth(&finance)
        .json(&range)
        .send()
        .await
        .unwrap();
    assert_eq!(totals.headers()["content-type"], "text/csv");
    let text = totals.text().await.unwrap();
    assert!(text.starts_with("group,key,symbol,expected,expected_atomic,matched,matched_atomic,"), "{text}");
    assert!(text.contains("\r\nprovider,weather,USDC,0.002,2000,0.002,2000,0,0\r\n"), "{text}");

    let provider = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let (s, _) = h.admin(Method::POST, "/admin/reconcile", Some(&provider), Some(range)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, bad) = h.admin(Method::POST, "/admin/reconcile", Some(&finance), Some(json!({ "from_block": 5 }))).await;
    assert_eq!((s, bad["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_request")));
}
both_engines!(finance_api, finance_reconciles_over_the_api);

// Goal: an accepted call whose audit record was lost (still queued when the process died) gets
// a record rebuilt from its ledger entry by the recovery sweep once its entry has ended and the
// grace period has passed; a call that was audited normally is not audited twice; the chain
// stays intact.
async fn lost_audit_records_are_recovered(h: &Harness) {
    let (resp, audited) = pay(h, "/weather/bonn").await;
    assert_eq!(resp.status(), StatusCode::OK);
    wait_audit(h, "/admin/audit", 1).await;
    // A reservation made without the gateway's audit path: what a killed process leaves.
    let b = h.payment("/weather/riga").await;
    let lost = h
        .gateway
        .ledger
        .entries()
        .reserve(&tollgate_metering::NewEntry {
            credential: Some("env:TEST_API_KEY".to_owned()),
            ..h.weather_entry(&b, "/weather/riga", tollgate_metering::SettlementMode::After)
        })
        .await
        .unwrap();
    // Within the grace period nothing is backfilled (a live replica may still be writing it).
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    assert_eq!(wait_audit(h, "/admin/audit", 1).await.len(), 1);
    // The sweep first ends the abandoned entry (voided: never forwarded); once that end is older
    // than the grace period, the record is rebuilt.
    h.clock.set(h.now + 3 * 3600);
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    assert_eq!(
        h.gateway.ledger.entries().get(&lost).await.unwrap().unwrap().state,
        tollgate_metering::EntryState::Voided
    );
    h.clock.set(h.now + 6 * 3600);
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    let records = wait_audit(h, "/admin/audit", 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let recovered = &records[1];
    assert_eq!(recovered["entry_id"], lost.to_string());
    assert_eq!(recovered["reason"], "recovered_after_restart");
    // The decision is the ledger's outcome: the entry ended voided (never forwarded), so denied.
    assert_eq!(recovered["decision"], "denied");
    assert_eq!(recovered["path"], "/weather/riga");
    assert_eq!(recovered["credential"], "env:TEST_API_KEY");
    let first = h.entry_for(&audited).await.unwrap();
    assert_eq!(records[0]["entry_id"], first.id.to_string());
    tollgate_gateway::settlement::recover_once(&h.gateway.settlements).await.unwrap();
    let (_, v) = h.admin(Method::GET, "/admin/audit/verify", Some(&h.operator), None).await;
    assert_eq!((v["intact"].clone(), v["records"].clone()), (json!(true), json!(2)), "no duplicates: {v}");
}
both_engines!(audit_backfill, lost_audit_records_are_recovered);

// Goal: the admin API refuses what the gateway could not serve — a provider naming a vault
// credential when no master key is configured, an endpoint when no relayer key is — with 409
// not_configured, applying nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_what_cannot_be_served() {
    let Some(h) = Harness::start(crate::harness::Engine::Sqlite).await else { return };
    // A second gateway on the same database without vault key and relayer key.
    let text = h.config_text_for_test().replace("[vault]\nmaster_key_env = \"TEST_VAULT_KEY\"\n", "");
    let text = text.replace("relayer_key_env = \"TEST_RELAYER_KEY\"\n", "");
    let text = text.split("[[providers]]").next().unwrap().to_owned();
    let config = tollgate_gateway::Config::parse(&text, &|_| None).expect("config without keys");
    let gw = tollgate_gateway::Gateway::start(config, h.clock.clone()).await.unwrap();
    let admin = crate::harness::serve_admin_on_free_port(gw.clone()).await;
    let before = gw.ledger.settings().state().await.unwrap().version;
    let provider = json!({ "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "upstream": "http://127.0.0.1:9",
        "credential": { "inject": "header", "vault": "main" } });
    let (s, out) =
        admin_call(&h.http, &admin, Method::PUT, "/admin/providers/newco", Some(&h.operator), Some(provider)).await;
    assert_eq!((s, out["error"]["code"].clone()), (StatusCode::CONFLICT, json!("not_configured")), "{out}");
    let spec = json!({ "path": "/weather/x", "price": "0.001" });
    let (s, out) =
        admin_call(&h.http, &admin, Method::PUT, "/admin/providers/weather/endpoints", Some(&h.operator), Some(spec))
            .await;
    assert_eq!((s, out["error"]["code"].clone()), (StatusCode::CONFLICT, json!("not_configured")), "{out}");
    assert_eq!(gw.ledger.settings().state().await.unwrap().version, before, "nothing applied");
    h.stop().await;
}

// Goal: endpoints cannot shadow another provider's: an operator's overlapping pattern is
// refused (400), a provider token cannot leave its provider's path prefix (403) nor raise the
// gateway's limits (400), and a non-overlapping endpoint inside the prefix is accepted.
async fn endpoints_cannot_shadow_other_providers(h: &Harness) {
    let newco = json!({ "pay_to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "upstream": "http://127.0.0.1:9" });
    let (s, _) = h.admin(Method::PUT, "/admin/providers/newco", Some(&h.operator), Some(newco)).await;
    assert_eq!(s, StatusCode::OK);
    for squat in ["/*", "/weather/*", "/weather/{x}", "/vaulted/anykey/1"] {
        let spec = json!({ "path": squat, "price": "0.001" });
        let (s, out) = h.admin(Method::PUT, "/admin/providers/newco/endpoints", Some(&h.operator), Some(spec)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{squat}: {out}");
        assert!(out["error"]["message"].as_str().unwrap().contains("overlaps"), "{out}");
    }
    let spec = json!({ "path": "/newco/{x}", "price": "0.001" });
    let (s, out) = h.admin(Method::PUT, "/admin/providers/newco/endpoints", Some(&h.operator), Some(spec)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // A provider token: only inside its prefix (`/viaquery` for via-query).
    let token = admin_token(&h.gateway, Role::Provider, Some("via-query")).await;
    // `/viaqueryx` starts with the prefix as a string but is another path: forbidden.
    let spec = json!({ "path": "/viaqueryx/a", "price": "0.001" });
    let (s, _) = h.admin(Method::PUT, "/admin/providers/via-query/endpoints", Some(&token), Some(spec)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Not even starting with it: the route itself is invalid for this provider.
    let spec = json!({ "path": "/newco2/a", "price": "0.001" });
    let (s, out) = h.admin(Method::PUT, "/admin/providers/via-query/endpoints", Some(&token), Some(spec)).await;
    assert_eq!((s, out["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!("invalid_request")));
    // Limits a provider may not raise for itself.
    for (key, value) in
        [("body_bytes_max", 1u64 << 30), ("upstream_timeout_ms", 3_600_000), ("max_timeout_seconds", 86_400)]
    {
        let spec = json!({ "path": "/viaquery/q2/{x}", "price": "0.001", key: value });
        let (s, out) = h.admin(Method::PUT, "/admin/providers/via-query/endpoints", Some(&token), Some(spec)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{key}: {out}");
        assert!(out["error"]["message"].as_str().unwrap().contains(key), "{out}");
    }
    let spec = json!({ "path": "/viaquery/q2/{x}", "price": "0.001" });
    let (s, out) = h.admin(Method::PUT, "/admin/providers/via-query/endpoints", Some(&token), Some(spec)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // A provider without a prefix (newco) cannot add endpoints with its own token.
    let token = admin_token(&h.gateway, Role::Provider, Some("newco")).await;
    let spec = json!({ "path": "/newco/other", "price": "0.001" });
    let (s, _) = h.admin(Method::PUT, "/admin/providers/newco/endpoints", Some(&token), Some(spec)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both_engines!(no_shadowing, endpoints_cannot_shadow_other_providers);

/// The first offer of `GET base path` (from a real 402).
async fn offer_at(h: &Harness, base: &str, path: &str) -> tollgate_x402::v2::PaymentRequirements {
    let resp = h.http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
    let header = resp.headers().get("payment-required").expect("v2 challenge header").as_bytes().to_vec();
    let challenge: tollgate_x402::v2::PaymentRequired =
        tollgate_x402::decode_header(&header, tollgate_x402::PAYMENT_HEADER_BYTES_MAX).unwrap();
    challenge.accepts.into_iter().next().expect("an offer")
}

// Goal: the SSRF guard refuses, through the admin API with 400 upstream_refused naming the
// rule, an upstream in each refused class — loopback (an address, and `localhost`, a name that
// resolves to 127.0.0.1, without repeating the address), link-local and the metadata address,
// private ranges, carrier-grade NAT, unspecified, broadcast, multicast, the RPC node's host on
// another port, the RPC node itself, the admin listener, and a name that does not resolve —
// applying nothing; `[admin] upstream_allow = ["localhost:PORT"]` admits exactly that host
// and port, a paid call through it is served, and a replica whose allow-list lacks it refuses
// the connection (502, nothing charged) because admin-created upstreams are checked again at
// every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_guard_refuses_internal_upstreams() {
    let Some(h) = Harness::start(crate::harness::Engine::Sqlite).await else { return };
    let weather = h.gateway.config.providers.iter().find(|p| p.id == "weather").unwrap();
    let port = weather.upstream.port().unwrap();
    let text = h
        .config_text_for_test()
        .replace("upstream_allow = [\"127.0.0.1\"]", &format!("upstream_allow = [\"localhost:{port}\"]"));
    let config = tollgate_gateway::Config::parse(&text, &|k| h.env.get(k).cloned()).expect("config");
    let gw = tollgate_gateway::Gateway::start(config, h.clock.clone()).await.unwrap();
    let admin = crate::harness::serve_admin_on_free_port(gw.clone()).await;
    let (url, _stop) = crate::harness::serve_on_free_port(gw.clone()).await;
    let rpc = reqwest::Url::parse(secrecy::ExposeSecret::expose_secret(&gw.config.networks[0].rpc_url)).unwrap();
    let (rpc_host, rpc_port) = (rpc.host_str().unwrap().to_owned(), rpc.port().unwrap());
    let put = |upstream: String| {
        let body = json!({ "pay_to": format!("{:#x}", h.payee), "upstream": upstream, "allow_insecure_http": true,
            "strip_prefix": "/ssrfok" });
        let (http, admin, operator) = (h.http.clone(), admin.clone(), h.operator.clone());
        async move { admin_call(&http, &admin, Method::PUT, "/admin/providers/ssrfok", Some(&operator), Some(body)).await }
    };
    let before = gw.ledger.settings().state().await.unwrap().version;
    let cases = [
        ("http://127.0.0.2:9".to_owned(), "loopback"),
        ("http://localhost:9".to_owned(), "loopback"),
        ("http://[::1]:9".to_owned(), "loopback"),
        ("http://169.254.169.254".to_owned(), "link_local"),
        ("http://[fe80::1]".to_owned(), "link_local"),
        ("http://10.1.2.3".to_owned(), "private"),
        ("http://172.16.0.1".to_owned(), "private"),
        ("http://192.168.0.1".to_owned(), "private"),
        ("http://[fd00::1]".to_owned(), "private"),
        ("http://100.64.0.1".to_owned(), "shared_address_space"),
        ("http://0.0.0.0".to_owned(), "unspecified"),
        ("http://255.255.255.255".to_owned(), "broadcast"),
        ("http://224.0.0.1".to_owned(), "multicast"),
        (format!("http://{rpc_host}:9"), "rpc_host"),
        (format!("http://{rpc_host}:{rpc_port}"), "rpc_node"),
        ("http://127.0.0.1:8403".to_owned(), "admin_listener"),
        ("http://no-such-host.invalid".to_owned(), "unresolvable"),
        (format!("http://localhost:{}", port.wrapping_add(1)), "loopback"),
    ];
    for (upstream, rule) in cases {
        let (s, out) = put(upstream.clone()).await;
        assert_eq!(
            (s, out["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!("upstream_refused")),
            "{upstream}: {out}"
        );
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("(rule {rule})")), "{upstream}: {message}");
    }
    let (_, out) = put("http://localhost:9".to_owned()).await;
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains("localhost") && !message.contains("127.0.0.1"), "{message}");
    assert_eq!(gw.ledger.settings().state().await.unwrap().version, before, "nothing applied");

    // The allow-list admits exactly localhost:PORT; a paid call through it is served.
    let (s, out) = put(format!("http://localhost:{port}")).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let spec = json!({ "path": "/ssrfok/anykey/{x}", "price": "0.001" });
    let (s, out) =
        admin_call(&h.http, &admin, Method::PUT, "/admin/providers/ssrfok/endpoints", Some(&h.operator), Some(spec))
            .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let b = tollgate_test_support::PaymentBuilder::new(&offer_at(&h, &url, "/ssrfok/anykey/1").await, &h.payer, h.now);
    let resp =
        h.http.get(format!("{url}/ssrfok/anykey/1")).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "served");

    // The harness's gateway shares the database but allows only 127.0.0.1: its guarded client
    // refuses to connect to localhost, before anything is sent; nothing is charged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.http.get(format!("{}/ssrfok/anykey/2", h.url)).send().await.unwrap().status()
        != StatusCode::PAYMENT_REQUIRED
    {
        assert!(Instant::now() < deadline, "the replica loads the provider");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = h.upstream.calls();
    let (resp, b) = pay(&h, "/ssrfok/anykey/2").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "upstream_unavailable");
    assert_eq!(h.upstream.calls(), calls, "nothing reached the upstream");
    assert_eq!(h.entry_for(&b).await.unwrap().state, EntryState::Voided);
    h.stop().await;
}
