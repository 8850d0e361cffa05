//! The web console: static files embedded in the binary (`include_str!`), served by the admin
//! listener under `/console/`. The console is a client of the admin API like the CLI: the
//! browser sends the admin token as a bearer header to `/admin/...`, so the console has no
//! data route, no session and no cookie of its own (docs/console.md).
//!
//! Every answer carries a strict Content-Security-Policy (scripts only from this origin, no
//! inline script or style, no framing, no form posts, connections only to this origin) and
//! `X-Content-Type-Options: nosniff`.
//!
//! Must not: read the ledger, the token or any request data (it serves fixed bytes), load
//! anything from another origin, or be mounted on the paid listener.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy of every console answer. `connect-src 'self'`: the scripts talk only to the
/// admin API of the listener that served them; `style-src 'self'`: no inline style either.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console; anything else under `/console/` is 404.
const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: HTML, body: include_str!("assets/index.html") },
    Asset { name: "console.css", content_type: CSS, body: include_str!("assets/console.css") },
    Asset { name: "favicon.svg", content_type: SVG, body: include_str!("assets/favicon.svg") },
    Asset { name: "app.js", content_type: JS, body: include_str!("assets/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_str!("assets/api.js") },
    Asset { name: "dom.js", content_type: JS, body: include_str!("assets/dom.js") },
    Asset { name: "chart.js", content_type: JS, body: include_str!("assets/chart.js") },
    Asset { name: "pages/overview.js", content_type: JS, body: include_str!("assets/pages/overview.js") },
    Asset { name: "pages/ledger.js", content_type: JS, body: include_str!("assets/pages/ledger.js") },
    Asset { name: "pages/endpoints.js", content_type: JS, body: include_str!("assets/pages/endpoints.js") },
    Asset { name: "pages/wallets.js", content_type: JS, body: include_str!("assets/pages/wallets.js") },
    Asset { name: "pages/finance.js", content_type: JS, body: include_str!("assets/pages/finance.js") },
];

/// The console's routes, merged into the admin router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset("index.html") }))
        .route("/console/{*file}", get(|Path(file): Path<String>| async move { asset(&file) }))
}

fn asset(name: &str) -> Response {
    let found = ASSETS.iter().find(|a| a.name == name);
    let (status, content_type, body) = match found {
        Some(a) => (StatusCode::OK, a.content_type, a.body),
        None => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n"),
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidated on every load: a new binary's console is never mixed with an old one's.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, asset};

    // Goal: every embedded file is served with the CSP and its content type, an unknown one is
    // 404, and no file loads a script or style from another origin or carries inline script.
    #[test]
    fn assets_are_served_with_the_policy_and_load_nothing_remote() {
        for a in ASSETS {
            let r = asset(a.name);
            assert_eq!(r.status(), 200, "{}", a.name);
            assert!(r.headers().get("content-security-policy").is_some(), "{}", a.name);
            for remote in ["src=\"http", "href=\"http", "from 'http", "import('http", "url(http", "@import"] {
                assert!(!a.body.contains(remote), "{} loads from another origin ({remote})", a.name);
            }
            assert!(!a.body.contains("innerHTML") && !a.body.contains("outerHTML"), "{} writes HTML", a.name);
            assert!(!a.body.contains("onclick=") && !a.body.contains("<script>"), "{} has inline script", a.name);
        }
        assert_eq!(asset("nope.js").status(), 404);
        assert_eq!(asset("../Cargo.toml").status(), 404);
    }
}
