//! Operational hygiene: the admin API takes its bearer scheme in any case.

use axum::http::StatusCode;

use crate::{Engine, Harness};

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
