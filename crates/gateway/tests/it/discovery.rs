//! Discovery over HTTP, on both engines: the `bazaar` extension and the service description
//! in every 402, `GET /discovery/resources` (filters, pages, limits, refusals),
//! `/.well-known/x402.json` and `/openapi.json`, all following admin changes on the next
//! call, and none of them naming an upstream or a credential.

use alloy_primitives::Address;
use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_test_support::{ProviderConfig, RouteConfig, TomlValue, string_array};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, decode_header};

use crate::harness::{API_KEY, Engine, Harness, Options, PRICE_ATOMIC};

/// The provider this suite adds: described for agents, with a secret credential and an
/// upstream whose URL must never leak (it is never called here).
const ATLAS_UPSTREAM: &str = "https://atlas-upstream.internal.test/private-base";
const ATLAS_PAY_TO: &str = "0x00000000000000000000000000000000000a71a5";

fn atlas() -> ProviderConfig {
    let pay_to: Address = ATLAS_PAY_TO.parse().unwrap();
    ProviderConfig::new("atlas", pay_to, ATLAS_UPSTREAM)
        .strip_prefix("/atlas")
        .credential_header("TEST_API_KEY")
        .set("service_name", "Atlas Maps")
        .set("tags", string_array(&["maps", "geo"]))
        .set("icon_url", "https://cdn.atlas.example/icon.png")
        .route(
            RouteConfig::new("/atlas/geo/{place}", 2_500).description("Geocode a place").set(
                "discovery",
                TomlValue::Raw(
                    r#"{ query_example = { lang = "en" }, query_schema = { type = "object", properties = { lang = { type = "string" } }, required = ["lang"] }, output_example = { lat = 48.85, lon = 2.35 } }"#
                        .to_owned(),
                ),
            ),
        )
        .route(RouteConfig::new("/atlas/route", 7_000).methods(&["POST"]).set(
            "discovery",
            TomlValue::Raw(
                r#"{ body_example = { from = "a", to = "b" }, body_schema = { type = "object", properties = { from = { type = "string" }, to = { type = "string" } } } }"#
                    .to_owned(),
            ),
        ))
        // A price of zero: a free route, which discovery leaves out.
        .route(RouteConfig::new("/atlas/status", 0))
}

async fn start(engine: Engine) -> Option<Harness> {
    Harness::start_with(engine, Options { providers: vec![atlas()], ..Options::default() }).await
}

/// `GET path` on the public listener: (status, JSON body).
async fn get(h: &Harness, path: &str) -> (StatusCode, Value) {
    let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The v2 challenge of an unpaid `method path`, decoded from its header.
async fn challenge(h: &Harness, method: Method, path: &str) -> Value {
    let resp = h.http.request(method, format!("{}{path}", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let header = resp.headers().get("payment-required").expect("v2 challenge header").as_bytes().to_vec();
    decode_header(&header, PAYMENT_HEADER_BYTES_MAX).unwrap()
}

/// The number of priced routes the gateway serves (every provider of the harness and ours).
fn priced_routes(h: &Harness) -> u64 {
    h.gateway.live.get().routes.iter().filter(|e| !e.route.free).count() as u64
}

fn item<'a>(list: &'a Value, resource_suffix: &str) -> Option<&'a Value> {
    list["items"].as_array().unwrap().iter().find(|i| i["resource"].as_str().unwrap().ends_with(resource_suffix))
}

// Goal: a 402 carries the route's bazaar declaration (method, query example, path
// parameters of this request, routeTemplate, output example; body type and example for a
// POST) and the provider's serviceName, tags and iconUrl, as configured.
async fn challenge_carries_bazaar(h: &Harness) {
    let c = challenge(h, Method::GET, "/atlas/geo/paris").await;
    let bazaar = &c["extensions"]["bazaar"];
    assert_eq!(
        bazaar["info"]["input"],
        json!({ "type": "http", "method": "GET", "queryParams": { "lang": "en" }, "pathParams": { "place": "paris" } })
    );
    assert_eq!(bazaar["info"]["output"], json!({ "type": "json", "example": { "lat": 48.85, "lon": 2.35 } }));
    assert_eq!(bazaar["routeTemplate"], "/atlas/geo/:place");
    assert_eq!(bazaar["schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(bazaar["schema"]["properties"]["input"]["properties"]["queryParams"]["required"], json!(["lang"]));
    assert_eq!(c["resource"]["serviceName"], "Atlas Maps");
    assert_eq!(c["resource"]["tags"], json!(["maps", "geo"]));
    assert_eq!(c["resource"]["iconUrl"], "https://cdn.atlas.example/icon.png");
    assert_eq!(c["resource"]["url"], "http://gateway.test/atlas/geo/paris");
    assert!(c["extensions"]["payment-identifier"].is_object(), "the other extension stays");
    let c = challenge(h, Method::POST, "/atlas/route").await;
    assert_eq!(
        c["extensions"]["bazaar"]["info"]["input"],
        json!({ "type": "http", "method": "POST", "bodyType": "json", "body": { "from": "a", "to": "b" } })
    );
    assert!(c["extensions"]["bazaar"].get("routeTemplate").is_none(), "a static route has no template");
    // A route with no discovery table still declares how to call it.
    let c = challenge(h, Method::GET, "/weather/rome").await;
    assert_eq!(c["extensions"]["bazaar"]["info"]["input"]["pathParams"], json!({ "city": "rome" }));
    assert!(c["resource"].get("serviceName").is_none());
}

// Goal: /discovery/resources lists every enabled priced route (never the free one) with its
// offers and an ISO 8601 lastUpdated, filters by type, payTo, scheme, network and extensions,
// pages with limit/offset and caps limit at 100.
async fn resources_filter_and_page(h: &Harness) {
    let total = priced_routes(h);
    let (s, all) = get(h, "/discovery/resources").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["x402Version"], 2);
    assert_eq!(all["pagination"], json!({ "limit": 20, "offset": 0, "total": total }));
    assert!(item(&all, "/atlas/status").is_none(), "free routes are not listed");
    let geo = item(&all, "/atlas/geo/{place}").expect("the atlas route");
    assert_eq!(geo["resource"], "http://gateway.test/atlas/geo/{place}");
    assert_eq!((geo["type"].as_str(), geo["x402Version"].as_u64()), (Some("http"), Some(2)));
    assert_eq!(geo["accepts"][0]["amount"], "2500");
    assert_eq!(geo["accepts"][0]["payTo"].as_str().unwrap().to_lowercase(), ATLAS_PAY_TO);
    let updated = geo["lastUpdated"].as_str().unwrap();
    assert!(updated.len() == 20 && updated.ends_with('Z') && updated.as_bytes()[10] == b'T', "{updated}");
    assert_eq!(geo["metadata"]["serviceName"], "Atlas Maps");
    assert_eq!(geo["metadata"]["extensions"]["bazaar"]["routeTemplate"], "/atlas/geo/:place");

    let (_, mine) = get(h, &format!("/discovery/resources?payTo={ATLAS_PAY_TO}")).await;
    assert_eq!(mine["pagination"]["total"], 2, "{mine}");
    for (query, expected) in [
        ("type=http", total),
        ("type=mcp", 0),
        ("scheme=exact", total),
        ("scheme=upto", 0),
        ("network=eip155:8453", total),
        ("network=eip155%3A1", 0),
        ("extensions=bazaar,payment-identifier", total),
        ("extensions=sign-in-with-x", 0),
    ] {
        let (s, list) = get(h, &format!("/discovery/resources?{query}")).await;
        assert_eq!((s, list["pagination"]["total"].as_u64()), (StatusCode::OK, Some(expected)), "{query}");
    }
    let (_, page) = get(h, "/discovery/resources?limit=2&offset=1").await;
    assert_eq!(page["pagination"], json!({ "limit": 2, "offset": 1, "total": total }));
    let names = |l: &Value| l["items"].as_array().unwrap().iter().map(|i| i["resource"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&page), names(&all)[1..3].to_vec(), "a page is a slice of the list, in order");
    let (_, capped) = get(h, "/discovery/resources?limit=1000").await;
    assert_eq!(capped["pagination"]["limit"], 100);
    let (_, past) = get(h, &format!("/discovery/resources?offset={total}")).await;
    assert_eq!(past["items"], json!([]));
}

// Goal: malformed, unknown or repeated query parameters are 400 `invalid_discovery_query`,
// naming the parameter and never echoing its value.
async fn bad_params_refused(h: &Harness) {
    for query in [
        "limit=0",
        "limit=abc",
        "offset=-1",
        "type=ftp",
        "payTo=0x1234",
        "network=mars",
        "scheme=a%20b",
        "extensions=",
        "limit=1&limit=2",
        "metadata[provider]=evil-value",
    ] {
        let (s, body) = get(h, &format!("/discovery/resources?{query}")).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_discovery_query")),
            "{query}"
        );
        assert!(!body.to_string().contains("evil-value"), "{body}");
    }
}

// Goal: the manifest and the OpenAPI document list every priced route with its price (the
// OpenAPI operations with parameters, body and response from the configuration), never a
// free route.
async fn manifest_and_openapi(h: &Harness) {
    let total = priced_routes(h);
    let (s, manifest) = get(h, "/.well-known/x402.json").await;
    assert_eq!(s, StatusCode::OK, "{manifest}");
    assert_eq!(manifest["items"].as_array().unwrap().len() as u64, total);
    let geo = item(&manifest, "/atlas/geo/{place}").unwrap();
    assert_eq!(geo["accepts"][0]["amount"], "2500");
    assert_eq!(geo["input"]["queryParams"], json!({ "lang": "en" }));
    assert_eq!(geo["output"]["example"]["lat"], 48.85);
    assert_eq!(manifest["openapi"], "http://gateway.test/openapi.json");
    assert!(item(&manifest, "/atlas/status").is_none());

    let (s, doc) = get(h, "/openapi.json").await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "http://gateway.test");
    let paths = doc["paths"].as_object().unwrap();
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert!(operations as u64 >= total, "every priced route has its operations");
    assert!(!paths.contains_key("/atlas/status"), "free routes are not in the document");
    let get_geo = &doc["paths"]["/atlas/geo/{place}"]["get"];
    assert_eq!(get_geo["x-x402"]["prices"][0]["amount"], "2500");
    assert_eq!(get_geo["x-x402"]["prices"][0]["display"].as_str().unwrap().split(' ').next(), Some("0.0025"));
    assert_eq!(
        get_geo["parameters"][0],
        json!({ "name": "place", "in": "path", "required": true, "schema": { "type": "string" } })
    );
    assert_eq!(get_geo["parameters"][1]["name"], "lang");
    assert_eq!(get_geo["parameters"][1]["required"], true);
    assert_eq!(get_geo["responses"]["200"]["content"]["application/json"]["example"]["lon"], 2.35);
    let post_route = &doc["paths"]["/atlas/route"]["post"];
    assert_eq!(post_route["requestBody"]["content"]["application/json"]["example"], json!({ "from": "a", "to": "b" }));
    assert_eq!(post_route["x-x402"]["accepts"][0]["amount"], "7000");
    assert_eq!(doc["paths"]["/weather/{city}"]["get"]["x-x402"]["prices"][0]["amount"], PRICE_ATOMIC.to_string());
}

// Goal: no discovery answer and no 402 names an upstream URL (host or path), the credential,
// or where the credential comes from.
async fn no_secret_or_upstream(h: &Harness) {
    let mut texts = Vec::new();
    for path in ["/discovery/resources?limit=100", "/.well-known/x402.json", "/openapi.json"] {
        texts.push(h.http.get(format!("{}{path}", h.url)).send().await.unwrap().text().await.unwrap());
    }
    // (The vaulted route answers 503 until a credential version is uploaded: no 402 to read.)
    for path in ["/atlas/geo/x", "/weather/x", "/viaquery/q/x", "/viabasic/basic"] {
        texts.push(challenge(h, Method::GET, path).await.to_string());
    }
    let mut forbidden: Vec<String> =
        vec![API_KEY.into(), "TEST_API_KEY".into(), "atlas-upstream".into(), "private-base".into()];
    for p in &h.gateway.live.get().providers {
        let u = &p.upstream;
        forbidden.push(format!("{}:{}", u.host_str().unwrap(), u.port_or_known_default().unwrap()));
    }
    for text in &texts {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "`{f}` appears in: {text}");
        }
    }
}

// Goal: a price change and a disabled endpoint made through the admin API show on the very
// next discovery, manifest and OpenAPI call (no restart, no cache).
async fn admin_changes_show_next_call(h: &Harness) {
    let endpoints = "/admin/providers/atlas/endpoints";
    let patch = json!({ "path": "/atlas/geo/{place}", "price_atomic": "3100" });
    let (s, body) = h.admin(Method::PATCH, endpoints, Some(&h.operator), Some(patch)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, list) = get(h, "/discovery/resources?limit=100").await;
    assert_eq!(item(&list, "/atlas/geo/{place}").unwrap()["accepts"][0]["amount"], "3100");
    let (_, doc) = get(h, "/openapi.json").await;
    assert_eq!(doc["paths"]["/atlas/geo/{place}"]["get"]["x-x402"]["prices"][0]["amount"], "3100");
    let (_, manifest) = get(h, "/.well-known/x402.json").await;
    assert_eq!(item(&manifest, "/atlas/geo/{place}").unwrap()["accepts"][0]["amount"], "3100");

    let total = priced_routes(h);
    let disable = json!({ "path": "/atlas/geo/{place}", "enabled": false });
    let (s, body) = h.admin(Method::PATCH, endpoints, Some(&h.operator), Some(disable)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, list) = get(h, "/discovery/resources?limit=100").await;
    assert!(item(&list, "/atlas/geo/{place}").is_none(), "{list}");
    assert_eq!(list["pagination"]["total"].as_u64(), Some(total - 1));
    let (_, doc) = get(h, "/openapi.json").await;
    assert!(doc["paths"].get("/atlas/geo/{place}").is_none());
    let (_, manifest) = get(h, "/.well-known/x402.json").await;
    assert!(item(&manifest, "/atlas/geo/{place}").is_none());

    // Discovery fields set through the admin API are served too.
    let described = json!({ "path": "/atlas/route", "discovery": { "body_type": "text", "body_example": "hello" } });
    let (s, body) = h.admin(Method::PATCH, endpoints, Some(&h.operator), Some(described)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let c = challenge(h, Method::POST, "/atlas/route").await;
    assert_eq!(c["extensions"]["bazaar"]["info"]["input"]["body"], "hello");
    let invalid = json!({ "path": "/atlas/route", "discovery": { "body_type": "xml" } });
    let (s, body) = h.admin(Method::PATCH, endpoints, Some(&h.operator), Some(invalid)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

/// The read-only checks share one harness per engine.
async fn read_only(h: &Harness) {
    challenge_carries_bazaar(h).await;
    resources_filter_and_page(h).await;
    bad_params_refused(h).await;
    manifest_and_openapi(h).await;
    no_secret_or_upstream(h).await;
}

macro_rules! on_both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(h) = start(Engine::Sqlite).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = start(Engine::Postgres).await {
                    ($body)(&h).await;
                    h.stop().await;
                }
            }
        }
    };
}

on_both_engines!(discovery_read_only, read_only);
on_both_engines!(discovery_follows_admin_changes, admin_changes_show_next_call);
