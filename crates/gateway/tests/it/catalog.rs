//! The provider's catalog over the real admin API, on both engines: partial updates (PATCH),
//! what a provider token may change on its own endpoints, soft deletion, and free routes.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_metering::Role;
use tollgate_test_support::{ProviderConfig, RouteConfig, v2_header};

use crate::both_engines;
use crate::harness::{API_KEY, Engine, Harness, Options, admin_token};

const WEATHER: &str = "/admin/providers/weather/endpoints";

async fn pay(h: &Harness, path: &str) -> (reqwest::Response, tollgate_test_support::PaymentBuilder) {
    let b = h.payment(path).await;
    let resp = h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    (resp, b)
}

async fn endpoint(h: &Harness, list_path: &str, path: &str) -> Option<Value> {
    let (s, list) = h.admin(Method::GET, list_path, Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list["endpoints"].as_array().unwrap().iter().find(|e| e["path"] == path).cloned()
}

/// Polls the audit query until it returns at least `n` records (the writer is asynchronous).
async fn wait_audit(h: &Harness, query: &str, n: usize) -> Vec<Value> {
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

// Goal: PATCH changes only the fields it names (the description survives a price change, a
// new price version is made and quoted); a provider token whose provider has no path prefix
// changes price, description, networks and enablement of its own endpoint, and is refused
// creating a new one with an error that says why; unknown endpoints are 404.
async fn patch_keeps_other_fields(h: &Harness) {
    let provider = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let patch = json!({ "path": "/weather/{city}", "price_atomic": "2500" });
    let (s, w) = h.admin(Method::PATCH, WEATHER, Some(&provider), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(w["new_price_version"], true);
    let e = endpoint(h, WEATHER, "/weather/{city}").await.unwrap();
    assert_eq!(
        (e["spec"]["description"].as_str(), e["spec"]["price_atomic"].as_str()),
        (Some("Weather"), Some("2500"))
    );
    assert_eq!(h.offer("/weather/rome").await.amount.to_string(), "2500");
    let patch = json!({ "path": "/weather/{city}", "description": "Current weather", "networks": ["eip155:8453"] });
    let (s, w) = h.admin(Method::PATCH, WEATHER, Some(&provider), Some(patch)).await;
    assert_eq!((s, w["new_price_version"].clone()), (StatusCode::OK, json!(false)), "{w}");
    let e = endpoint(h, WEATHER, "/weather/{city}").await.unwrap();
    assert_eq!(e["spec"]["description"], "Current weather");
    assert_eq!(e["spec"]["price_atomic"], "2500", "a description change kept the price");
    // What PUT can set, PATCH can: the payment-identifier options.
    let patch = json!({ "path": "/weather/{city}", "payment_id_required": true, "replay_body_bytes_max": 4096 });
    let (s, w) = h.admin(Method::PATCH, WEATHER, Some(&provider), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let e = endpoint(h, WEATHER, "/weather/{city}").await.unwrap();
    assert_eq!(
        (e["spec"]["payment_id_required"].clone(), e["spec"]["replay_body_bytes_max"].clone()),
        (json!(true), json!(4096))
    );
    assert_eq!(e["spec"]["description"], "Current weather", "kept");
    let offer_402 = h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap();
    let raw = offer_402.headers()["payment-required"].as_bytes().to_vec();
    let challenge: tollgate_x402::v2::PaymentRequired =
        tollgate_x402::decode_header(&raw, tollgate_x402::PAYMENT_HEADER_BYTES_MAX).unwrap();
    let ext = challenge.extensions.as_ref().and_then(|x| x.get("payment-identifier")).cloned();
    assert_eq!(ext.and_then(|x| x["info"].get("required").cloned()), Some(json!(true)), "the next 402 requires an id");
    let patch = json!({ "path": "/weather/{city}", "payment_id_required": false, "replay_body_bytes_max": 0 });
    let (s, w) = h.admin(Method::PATCH, WEATHER, Some(&provider), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    // Enablement through PATCH: kept when not named, changed when named.
    let (s, _) = h
        .admin(Method::PATCH, WEATHER, Some(&provider), Some(json!({ "path": "/weather/{city}", "enabled": false })))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let (s, _) = h
        .admin(Method::PATCH, WEATHER, Some(&provider), Some(json!({ "path": "/weather/{city}", "price": "0.003" })))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "a price change did not re-enable it"
    );
    let (s, _) = h
        .admin(Method::POST, &format!("{WEATHER}/enable"), Some(&provider), Some(json!({ "path": "/weather/{city}" })))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.offer("/weather/rome").await.amount.to_string(), "3000");
    // PUT of its own existing endpoint, outside any prefix: allowed too.
    let put = json!({ "path": "/fail", "price_atomic": "1500" });
    let (s, body) = h.admin(Method::PUT, WEATHER, Some(&provider), Some(put)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Creating a new endpoint: refused, saying why.
    let (s, body) =
        h.admin(Method::PUT, WEATHER, Some(&provider), Some(json!({ "path": "/brand-new", "price": "0.001" }))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("create a new endpoint") && message.contains("strip_prefix"), "{message}");
    let (s, body) =
        h.admin(Method::PATCH, WEATHER, Some(&provider), Some(json!({ "path": "/nope", "price": "0.001" }))).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    // Another provider's endpoint: refused.
    let other = admin_token(&h.gateway, Role::Provider, Some("vaulted")).await;
    let (s, _) =
        h.admin(Method::PATCH, WEATHER, Some(&other), Some(json!({ "path": "/fail", "price": "0.001" }))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both_engines!(endpoint_patch, patch_keeps_other_fields);

// Goal: deleting an endpoint or a provider is soft: the deleted routes answer 404 at once,
// listings leave them out (unless asked), the price history and the ledger entries that name
// them stay; listing an unknown or deleted provider's endpoints is 404, not `[]`.
async fn soft_delete_keeps_history(h: &Harness) {
    let (resp, b) = pay(h, "/weather/rome").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let entry = h.entry_for(&b).await.unwrap();
    let provider = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let (s, d) = h.admin(Method::DELETE, &format!("{WEATHER}?path=/weather/%7Bcity%7D"), Some(&provider), None).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["name"], "weather:/weather/{city}");
    assert_eq!(h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(endpoint(h, WEATHER, "/weather/{city}").await.is_none(), "a deleted endpoint is not listed");
    let kept = endpoint(h, &format!("{WEATHER}?include_deleted=true"), "/weather/{city}").await.unwrap();
    assert!(kept["deleted_unix_s"].as_u64().is_some(), "{kept}");
    let (s, history) =
        h.admin(Method::GET, &format!("{WEATHER}/prices?path=/weather/%7Bcity%7D"), Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK, "{history}");
    assert_eq!(history["versions"].as_array().unwrap().len(), 1);
    let still = h.entry_for(&b).await.unwrap();
    assert_eq!((still.id, still.price_version), (entry.id, entry.price_version));
    let (s, _) = h.admin(Method::DELETE, &format!("{WEATHER}?path=/weather/%7Bcity%7D"), Some(&provider), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleting twice");
    // Putting it again brings the same endpoint back, its price history going on.
    let (s, w) = h
        .admin(
            Method::PUT,
            WEATHER,
            Some(&h.operator),
            Some(json!({ "path": "/weather/{city}", "price_atomic": "1000" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(w["endpoint_id"], kept["id"]);

    // A provider: operators only; its routes go, and its listing is 404.
    let (s, _) = h.admin(Method::DELETE, "/admin/providers/via-basic", Some(&provider), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, d) = h.admin(Method::DELETE, "/admin/providers/via-basic", Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(h.http.get(format!("{}/viabasic/basic", h.url)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    for id in ["via-basic", "nobody"] {
        let (s, body) =
            h.admin(Method::GET, &format!("/admin/providers/{id}/endpoints"), Some(&h.operator), None).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{id}: {body}");
    }
    let (_, list) = h.admin(Method::GET, "/admin/providers", Some(&h.operator), None).await;
    assert!(list["providers"].as_array().unwrap().iter().all(|p| p["id"] != "via-basic"), "{list}");
    let (_, list) = h.admin(Method::GET, "/admin/providers?include_deleted=true", Some(&h.operator), None).await;
    assert!(list["providers"].as_array().unwrap().iter().any(|p| p["id"] == "via-basic"), "{list}");
    let (s, _) = h.admin(Method::DELETE, "/admin/providers/via-basic", Some(&h.operator), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleting twice");
}
both_engines!(soft_delete, soft_delete_keeps_history);

/// A harness with a free route from the file (`price_atomic = "0"`). Its provider's upstream
/// is set through the admin API by the test (the harness's upstream is started with it).
async fn free_harness(engine: Engine) -> Option<Harness> {
    let mut opts = Options::default();
    opts.providers.push(
        ProviderConfig::new("docs", tollgate_test_support::random_key().address(), "http://127.0.0.1:1")
            .strip_prefix("/free")
            .credential_header("TEST_API_KEY")
            .route(RouteConfig::new("/free/weather/{city}", 0)),
    );
    Harness::start_with(engine, opts).await
}

// Goal: a free route (price 0 in the file, or `free = true` set through the admin API) is
// forwarded without any payment with the provider's credential injected, never answers 402,
// writes no ledger entry, and is audited (accepted, reason `free`).
async fn free_routes_forward_with_the_credential(h: &Harness) {
    // The file's free route: its provider's upstream is not the mock, so point it there first.
    let (s, body) = h
        .admin(
            Method::PUT,
            "/admin/providers/docs",
            Some(&h.operator),
            Some(
                json!({ "pay_to": format!("{:#x}", h.payee), "upstream": h.upstream.mock.url(), "strip_prefix": "/free",
                "credential": { "inject": "header", "vault": "main" } }),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/providers/docs/credentials/main",
            Some(&h.operator),
            Some(json!({ "secret": API_KEY })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let before = h.upstream.calls();
    let resp = h.http.get(format!("{}/free/weather/oslo", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a free route answers without payment");
    assert!(resp.headers().get("payment-required").is_none());
    assert_eq!(resp.json::<Value>().await.unwrap()["city"], "oslo");
    assert_eq!(h.upstream.calls(), before + 1);
    assert_eq!(h.upstream.last().headers["authorization"].to_str().unwrap(), format!("Bearer {API_KEY}"));
    let records = wait_audit(h, "/admin/audit?provider=docs", 1).await;
    assert_eq!((records[0]["decision"].as_str(), records[0]["reason"].as_str()), (Some("accepted"), Some("free")));
    assert_eq!(records[0]["credential"], "vault:main");
    assert!(records[0]["entry_id"].is_null() && records[0]["wallet"].is_null(), "{:?}", records[0]);
    let (_, entries) = h.admin(Method::GET, "/admin/ledger/entries?provider=docs", Some(&h.operator), None).await;
    assert_eq!(entries["entries"].as_array().map(Vec::len), Some(0), "{entries}");

    // Made free through the admin API: the paid route stops quoting.
    assert_eq!(
        h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap().status(),
        StatusCode::PAYMENT_REQUIRED
    );
    let (s, w) = h
        .admin(Method::PATCH, WEATHER, Some(&h.operator), Some(json!({ "path": "/weather/{city}", "free": true })))
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let resp = h.http.get(format!("{}/weather/rome", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.upstream.last().headers["authorization"].to_str().unwrap(), format!("Bearer {API_KEY}"));
    let e = endpoint(h, WEATHER, "/weather/{city}").await.unwrap();
    assert_eq!((e["spec"]["free"].as_bool(), e["prices"].as_array().map(Vec::len)), (Some(true), Some(0)));
}

mod free_routes {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        if let Some(h) = free_harness(Engine::Sqlite).await {
            free_routes_forward_with_the_credential(&h).await;
            h.stop().await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(h) = free_harness(Engine::Postgres).await {
            free_routes_forward_with_the_credential(&h).await;
            h.stop().await;
        }
    }
}
