//! The x402 `payment-identifier` extension (issue 19, part 3) end to end: advertised in the
//! 402, looked up before verification, replayed without calling the upstream, refused when
//! reused with another payment, in flight, required, or malformed. Two providers of their own
//! (own upstream, own payee) beside the suite's: `ids` (no body kept) and `kept` (bodies up
//! to 4 KiB kept for replays, id required).

use alloy_primitives::{Address, U256};
use axum::http::StatusCode;
use reqwest::Method;
use tollgate_gateway::paid::payment_id_fingerprint;
use tollgate_metering::{EntryState, PaymentIdKey};
use tollgate_test_support::{PaymentBuilder, ProviderConfig, RouteConfig, RpcFault, random_key};
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
        // Through the RPC fault proxy (transparent unless a test sets a rule), so a test can
        // hold a verification while it changes the ledger.
        let opts = Options { providers: vec![ids, kept], rpc_proxy: true, ..Options::default() };
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

/// A v2 payment carrying `id` in the payment-identifier extension.
fn payload_with_id(b: &PaymentBuilder, id: Option<&str>) -> PaymentPayload {
    let mut p = b.v2();
    if let (PaymentPayload::V2(v), Some(id)) = (&mut p, id) {
        let ext = serde_json::json!({ "payment-identifier": { "info": { "required": false, "id": id } } });
        v.extensions = ext.as_object().cloned();
    }
    p
}

/// A v2 payment header carrying `id` in the payment-identifier extension.
fn with_id(b: &PaymentBuilder, id: Option<&str>) -> String {
    payload_with_id(b, id).to_header().unwrap()
}

/// Writes, as a gateway process that then died would have, a claim of `id` on `GET path` for
/// `payment` (route `route`), made `age_s` seconds ago and never bound to an entry.
async fn dead_claim(t: &Ids, route: &str, path: &str, id: &str, payment: &PaymentPayload, age_s: u64) {
    let key = PaymentIdKey { payer: t.h.payer.address(), route: route.to_owned(), id: id.to_owned() };
    let fingerprint = payment_id_fingerprint("GET", path, None, payment);
    let claimed = t.h.gateway.ledger.payment_ids().claim(&key, &fingerprint, t.h.now - age_s, 86_400, 0).await;
    assert!(claimed.unwrap(), "the dead process's claim is written");
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: serde_json::Value = resp.json().await.unwrap();
    // A 402's body is the v1 challenge, whose `error` is the code itself.
    body["error"]["code"].as_str().or(body["error"].as_str()).unwrap_or_default().to_owned()
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

// Goal: a retry of a call already answered gets its stored outcome even after the route's
// price changed through the admin API (the same receipt and body, no second upstream call or
// transfer), because the id is looked up before the offer is matched; a new payment with a
// new id at the old price is still refused with 402 (the offer check applies to it).
async fn replay_survives_price_change(t: &Ids) {
    let old_offer = t.h.offer("/kept/weather/quito").await;
    let b = PaymentBuilder::new(&old_offer, &t.h.payer, t.h.now);
    let header = with_id(&b, Some("pay_price_0123456789abcdef"));
    let first = t.get("/kept/weather/quito", &header).await;
    assert_eq!(first.status(), StatusCode::OK);
    let receipt = receipt_of(&first, "payment-response");
    assert!(receipt.success);
    let body = first.text().await.unwrap();

    let spec = serde_json::json!({
        "path": "/kept/weather/{city}", "price_atomic": "2500",
        "replay_body_bytes_max": 4096, "payment_id_required": true,
    });
    let (s, v) = t.h.admin(Method::PUT, "/admin/providers/kept/endpoints", Some(&t.h.operator), Some(spec)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(t.h.offer("/kept/weather/quito").await.amount.to_string(), "2500", "the new price is quoted");

    let again = t.get("/kept/weather/quito", &header).await;
    assert_eq!(again.status(), StatusCode::OK, "the stored outcome, not a fresh 402");
    assert_eq!(again.headers()["tollgate-payment-id"], "replayed");
    assert_eq!(receipt_of(&again, "payment-response"), receipt, "the same receipt");
    assert_eq!(again.text().await.unwrap(), body, "the same body");
    assert_eq!(t.upstream.calls(), 1, "the upstream is called once");
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC), "one transfer");

    let fresh = PaymentBuilder::new(&old_offer, &t.h.payer, t.h.now);
    let refused = t.get("/kept/weather/quito", &with_id(&fresh, Some("pay_price_fedcba9876543210"))).await;
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(error_code(refused).await, "accepted_requirement_mismatch");
    assert!(t.h.entry_for(&fresh).await.is_none(), "nothing reserved at the old price");
    assert_eq!(t.upstream.calls(), 1);
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC));
}
ids_engines!(replay_price_change, replay_survives_price_change);

// Goal: a stale claim (its process died between the claim and the reservation) is taken over
// only by its own payment: the same id with another payment gets 409 payment_id_conflict,
// whether it meets the claim at the lookup or, having passed the lookup before the claim was
// written and verified for longer than the grace, at its own claim; the claim's own payment
// then takes it over and is served and charged once.
async fn stale_claim_only_its_payment(t: &Ids) {
    const ROUTE: &str = "ids:/ids/weather/{city}";
    let offer = t.h.offer("/ids/weather/lagos").await;
    let dead = payload_with_id(&PaymentBuilder::new(&offer, &t.h.payer, t.h.now), Some("pay_stale_0123456789abcdef"));
    dead_claim(t, ROUTE, "/ids/weather/lagos", "pay_stale_0123456789abcdef", &dead, 3_600).await;

    // Another payment meets the stale claim at the lookup.
    let other = PaymentBuilder::new(&offer, &t.h.payer, t.h.now);
    let resp = t.get("/ids/weather/lagos", &with_id(&other, Some("pay_stale_0123456789abcdef"))).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(resp).await, "payment_id_conflict");
    assert!(t.h.entry_for(&other).await.is_none());

    // Another payment that passed the lookup before the dead claim was written: held in its
    // verification (the simulation stalls) while the claim appears, already stale.
    let rpc = t.h.rpc.as_ref().unwrap();
    let late = PaymentBuilder::new(&offer, &t.h.payer, t.h.now);
    let late_dead =
        payload_with_id(&PaymentBuilder::new(&offer, &t.h.payer, t.h.now), Some("pay_race_0123456789abcdef"));
    rpc.reset_counts();
    rpc.fail_next("eth_call", 1, RpcFault::Stall(std::time::Duration::from_millis(1500)));
    let pending = {
        let (http, url) = (t.h.http.clone(), format!("{}/ids/weather/lagos", t.h.url));
        let header = with_id(&late, Some("pay_race_0123456789abcdef"));
        tokio::spawn(async move { http.get(url).header("payment-signature", header).send().await.unwrap() })
    };
    // Polled, bounded: the proxy counts the simulation when it arrives.
    for _ in 0..2000 {
        if rpc.calls("eth_call") >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(rpc.calls("eth_call") >= 1, "the late payment reached its simulation");
    dead_claim(t, ROUTE, "/ids/weather/lagos", "pay_race_0123456789abcdef", &late_dead, 3_600).await;
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT, "a stale claim taken over by another payment");
    assert_eq!(error_code(resp).await, "payment_id_conflict");
    assert!(t.h.entry_for(&late).await.is_none(), "nothing reserved for the late payment");
    assert_eq!(t.upstream.calls(), 0);

    // The dead claim's own payment takes it over and is served once.
    let resp = t.get("/ids/weather/lagos", &dead.to_header().unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(t.upstream.calls(), 1);
    assert_eq!(t.payee_balance().await, U256::from(PRICE_ATOMIC));
}
ids_engines!(stale_claim, stale_claim_only_its_payment);
