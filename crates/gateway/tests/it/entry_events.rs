//! `GET /admin/ledger/entries/{id}/events`: one entry's event history (the console's entry
//! detail and `tollgate admin ledger events`).

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::json;
use tollgate_metering::{EntryState, Role};
use tollgate_test_support::v2_header;

use crate::both_engines;
use crate::harness::{Harness, admin_token};

// Goal: a settled call's events read reserved → … → settled with the settlement transaction,
// for the operator, finance and the entry's own provider; another provider's token gets 403
// for it and for ids that are unknown or malformed (it learns nothing); for an operator an
// unknown id is 404 and a malformed one 400.
async fn entry_events_by_role(h: &Harness) {
    let b = h.payment("/weather/nice").await;
    let resp =
        h.http.get(format!("{}/weather/nice", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let entry = h.wait_state(&b, EntryState::Settled).await;
    let path = format!("/admin/ledger/entries/{}/events", entry.id);

    let own = admin_token(&h.gateway, Role::Provider, Some("weather")).await;
    let finance = admin_token(&h.gateway, Role::Finance, None).await;
    for token in [&h.operator, &own, &finance] {
        let (s, body) = h.admin(Method::GET, &path, Some(token), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["entry_id"], json!(entry.id.to_string()));
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.first().unwrap()["to_state"], "reserved", "{body:#}");
        assert!(events.first().unwrap()["from_state"].is_null());
        let last = events.last().unwrap();
        assert_eq!(last["to_state"], "settled", "{body:#}");
        assert_eq!(last["tx_hash"], json!(entry.tx_hash), "{body:#}");
        assert!(events.iter().all(|e| e.get("payment").is_none()));
    }

    let other = admin_token(&h.gateway, Role::Provider, Some("vaulted")).await;
    let unknown = format!("/admin/ledger/entries/{}/events", "0".repeat(32));
    for p in [path.as_str(), unknown.as_str(), "/admin/ledger/entries/nope/events"] {
        let (s, body) = h.admin(Method::GET, p, Some(&other), None).await;
        assert_eq!((s, &body["error"]["code"]), (StatusCode::FORBIDDEN, &json!("admin_forbidden")), "{p}: {body}");
    }
    let (s, body) = h.admin(Method::GET, &unknown, Some(&h.operator), None).await;
    assert_eq!((s, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{body}");
    let (s, body) = h.admin(Method::GET, "/admin/ledger/entries/nope/events", Some(&finance), None).await;
    assert_eq!((s, &body["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_request")), "{body}");
}
both_engines!(entry_events_api, entry_events_by_role);
