//! The x402 `payment-identifier` extension (issue 19, part 3) end to end: advertised in the
//! 402, looked up before verification, replayed without calling the upstream, refused when
//! reused with another payment, in flight, required, or malformed. Two providers of their own
//! (own upstream, own payee) beside the suite's: `ids` (no body kept) and `kept` (bodies up
//! to 4 KiB kept for replays, id required).

use alloy_primitives::{Address, U256};
use axum::http::StatusCode;
use tollgate_metering::EntryState;
use tollgate_test_support::{PaymentBuilder, ProviderConfig, RouteConfig, random_key};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, PaymentPayload, decode_header, v2};

use crate::harness::{Engine, Harness, Options, PRICE_ATOMIC, Upstream, receipt_of};

/// The suite's harness plus the providers of this file, their upstream and payee.
struct Ids {
    h: Harness,
    upstream: Upstream,
    payee: Address,
}

impl Ids {
    async fn start(engine: Engine) -> Option<Ids> {
        let (upstream, url) = Upstream::start().await;
        let payee = random_key().address();
        let route = |path: &str| RouteConfig::new(path, PRICE_ATOMIC);
        let ids = ProviderConfig::new("ids", payee, &url)
            .strip_prefix("/ids")
            .credential_header("TEST_API_KEY")
            .route(route("/ids/weather/{city}"))
            .route(route("/ids/slowok"));
        let kept =
            ProviderConfig::new("kept", payee, &url).strip_prefix("/kept").credential_header("TEST_API_KEY").route(
                route("/kept/weather/{city}").set("replay_body_bytes_max", 4096u64).set("payment_id_required", true),
            );
        let opts = Options { providers: vec![ids, kept], ..Options::default() };
        let h = Harness::start_with(engine, opts).await?;
        Some(Ids { h, upstream, payee })
    }

    async fn get(&self, path: &str, header: &str) -> reqwest::Response {
        self.h.http.get(format!("{}{path}", self.h.url)).header("payment-signature", header).send().await.unwrap()
    }

    async fn payee_balance(&self) -> U256 {
        self.h.chain.balance(self.payee).await.unwrap()
    }
}

/// A v2 payment header carrying `id` in the payment-identifier extension.
fn with_id(b: &PaymentBuilder, id: Option<&str>) -> String {
    let mut p = b.v2();
    if let (PaymentPayload::V2(v), Some(id)) = (&mut p, id) {
        let ext = serde_json::json!({ "payment-identifier": { "info": { "required": false, "id": id } } });
        v.extensions = ext.as_object().cloned();
    }
    p.to_header().unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

macro_rules! ids_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(ids) = Ids::start(Engine::Sqlite).await {
                    ($body)(&ids).await;
                    ids.h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(ids) = Ids::start(Engine::Postgres).await {
                    ($body)(&ids).await;
                    ids.h.stop().await;
                }
            }
        }
    };
}

// Goal: the 402 advertises the extension with `required` per route, in the v2 challenge.
async fn advertised_per_route(t: &Ids) {
    for (path, required) in [("/ids/weather/oslo", false), ("/kept/weather/oslo", true)] {
        let resp = t.h.http.get(format!("{}{path}", t.h.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let raw = resp.headers()["payment-required"].as_bytes().to_vec();
        let challenge: v2::PaymentRequired = decode_header(&raw, PAYMENT_HEADER_BYTES_MAX).unwrap();
        let ext = &challenge.extensions.expect("extensions")["payment-identifier"];
        assert_eq!(ext["info"]["required"], required, "{path}");
        assert_eq!(ext["schema"]["properties"]["id"]["minLength"], 16);
    }
}
ids_engines!(advertised, advertised_per_route);

// Goal: on a route that keeps bodies, the same id and payment sent again get the stored
// answer (status, body, the same receipt) without a second upstream call or transfer.
async fn replay_returns_stored_body(t: &Ids) {
    let b = PaymentBuilder::new(&t.h.offer("/kept/weather/lima").await, &t.h.payer, t.h.now);
    let header = with_id(&b, Some("pay_kept_0123456789abcdef"));
    let first = t.get("/kept/weather/lima", &header).await;
    assert_eq!(first.status(), StatusCode::OK);
    let receipt = receipt_of(&first, "payment-response");
    assert!(receipt.success);
    let body = first.text().await.unwrap();

    let again = t.get("/kept/weather/lima", &header).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["tollgate-payment-id"], "replayed");
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_eq!(receipt_of(&again, "payment-response"), receipt, "the same receipt");
    assert_eq!(receipt_of(&again, "x-payment-response").transaction, receipt.transaction);
    assert_eq!(again.text().await.unwrap(), body, "the same body");
    assert_eq!(t.upstream.calls(), 1, "the upstream is called once");
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC), "one transfer");
    assert_eq!(t.h.entry_for(&b).await.unwrap().state, EntryState::Settled);
}
ids_engines!(replay_body, replay_returns_stored_body);

// Goal: on a route that keeps no body, the same id and payment get 409
// payment_already_processed naming the entry and its receipt URL, with the receipt; the same
// id with another payment gets 409 payment_id_conflict before any verification (no entry).
async fn replay_without_body_and_conflict(t: &Ids) {
    let offer = t.h.offer("/ids/weather/rome").await;
    let b = PaymentBuilder::new(&offer, &t.h.payer, t.h.now);
    let header = with_id(&b, Some("pay_plain_0123456789abcdef"));
    let first = t.get("/ids/weather/rome", &header).await;
    assert_eq!(first.status(), StatusCode::OK);
    let receipt = receipt_of(&first, "payment-response");

    let again = t.get("/ids/weather/rome", &header).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(receipt_of(&again, "payment-response"), receipt);
    let entry = t.h.entry_for(&b).await.unwrap();
    assert_eq!(again.headers()["tollgate-receipt"], entry.id.as_str());
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payment_already_processed");
    assert_eq!(body["error"]["entry"], entry.id.as_str());
    assert_eq!(body["error"]["receiptUrl"], format!("/receipts/{}", entry.id));

    let other = PaymentBuilder::new(&offer, &t.h.payer, t.h.now);
    let conflict = t.get("/ids/weather/rome", &with_id(&other, Some("pay_plain_0123456789abcdef"))).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(conflict).await, "payment_id_conflict");
    assert!(t.h.entry_for(&other).await.is_none(), "nothing reserved for the conflicting payment");
    // Another path with the same payment and id is another request.
    let path_conflict = t.get("/ids/weather/paris", &header).await;
    assert_eq!(error_code(path_conflict).await, "payment_id_conflict");
    assert_eq!(t.upstream.calls(), 1);
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC));
}
ids_engines!(replay_conflict, replay_without_body_and_conflict);

// Goal: while the first delivery is still running, the same id and payment get 409
// payment_in_flight with Retry-After; the first then finishes and is charged once.
async fn in_flight_is_409_with_retry_after(t: &Ids) {
    let b = PaymentBuilder::new(&t.h.offer("/ids/slowok").await, &t.h.payer, t.h.now);
    let header = with_id(&b, Some("pay_slow_0123456789abcdef"));
    let first = {
        let (http, url, header) = (t.h.http.clone(), format!("{}/ids/slowok", t.h.url), header.clone());
        tokio::spawn(async move { http.get(url).header("payment-signature", header).send().await.unwrap() })
    };
    // The upstream holds the first call 400 ms once it arrives.
    // (Polled, bounded: the hit is recorded when the request arrives.)
    for _ in 0..2000 {
        if t.upstream.calls() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(t.upstream.calls(), 1, "the first call reached the upstream");
    let second = t.get("/ids/slowok", &header).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(error_code(second).await, "payment_in_flight");
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    assert_eq!(t.upstream.calls(), 1);
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC));
}
ids_engines!(in_flight, in_flight_is_409_with_retry_after);

// Goal: a required id missing is 400 payment_id_required and a malformed id is 400
// invalid_payment_id, both before verification (no entry, no upstream call); a refusal
// before the reservation gives the id back, so the same id then pays with a new payment.
async fn required_malformed_and_released(t: &Ids) {
    let offer = t.h.offer("/kept/weather/kyiv").await;
    let b = PaymentBuilder::new(&offer, &t.h.payer, t.h.now);
    let missing = t.get("/kept/weather/kyiv", &with_id(&b, None)).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(missing).await, "payment_id_required");
    for bad in ["short", "pay_0123456789abcdef!", &"x".repeat(129)] {
        let resp = t.get("/kept/weather/kyiv", &with_id(&b, Some(bad))).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(resp).await, "invalid_payment_id");
    }
    assert!(t.h.entry_for(&b).await.is_none());

    let broke = tollgate_test_support::random_key();
    let unfunded = PaymentBuilder::new(&offer, &broke, t.h.now);
    let refused = t.get("/kept/weather/kyiv", &with_id(&unfunded, Some("pay_reused_0123456789abcdef"))).await;
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    // The broke payer's id was not kept: the same payer may use it again (here with the
    // funded key's payment, which is another payer's scope anyway, and then its own).
    let again = t.get("/kept/weather/kyiv", &with_id(&unfunded, Some("pay_reused_0123456789abcdef"))).await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED, "verified again, not replayed");
    let paid = t.get("/kept/weather/kyiv", &with_id(&b, Some("pay_reused_0123456789abcdef"))).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(t.upstream.calls(), 1);
}
ids_engines!(required_malformed, required_malformed_and_released);
