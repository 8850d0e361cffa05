//! Forwarding against a hostile upstream and hostile agents: request bodies over the cap never
//! reach the upstream, redirects are not charged and never show the upstream's host, no
//! response byte carries an injected secret, forwarding headers are the gateway's own,
//! cookies are dropped, oversized targets are refused before any work, and a `before`-mode
//! body that breaks off mid-delivery is owed back.

use std::time::Duration;

use alloy_primitives::{Address, U256};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_metering::EntryState;
use tollgate_test_support::{MockUpstream, ProviderConfig, Recorded, Reply, RouteConfig, quote, v2_header};

use crate::harness::{Harness, Options, PRICE_ATOMIC};

/// The hostile providers' secret: characters that every encoding spells differently.
const SECRET: &str = "hx-9f/2+Kq=7&z~Lw";

/// An upstream that echoes what it was sent (URL and credential) back in redirects, headers
/// and error bodies, sets cookies, and breaks off streamed bodies: a [`MockUpstream`]
/// answering with [`hostile_reply`]. Its hit count counts every request whose head arrived,
/// before reading any of its body.
struct Hostile {
    mock: MockUpstream,
}

impl Hostile {
    /// Requests whose head arrived.
    fn hits(&self) -> u64 {
        self.mock.total_hits()
    }

    /// The headers of the last request.
    fn last_headers(&self) -> HeaderMap {
        let last = self.mock.last_request().expect("the upstream saw a request");
        let mut headers = HeaderMap::new();
        for (k, v) in &last.headers {
            headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }
}

/// `application/x-www-form-urlencoded`, as an upstream framework would echo a value.
fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode_query(q: &str) -> String {
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&q[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hostile_reply(req: &Recorded) -> Reply {
    let header = |name: &str| req.header(name).unwrap_or_default();
    let host = header("host");
    let path = req.path().to_owned();
    let query = req.uri.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
    let auth = header("authorization");
    let full_url = format!("http://{host}{}", req.uri);
    // Everything it knows, the way a chatty error page would print it.
    let dump = || {
        let mut text = format!("url: {full_url}\nquery decoded: {}\n", decode_query(&query));
        for (name, value) in &req.headers {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value)));
        }
        if let Some(b64) = auth.strip_prefix("Basic ") {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
            text.push_str(&format!("basic decoded: {}\n", String::from_utf8_lossy(&raw)));
        }
        text
    };
    let text = |status: u16, headers: Vec<(&str, String)>, body: String| {
        let mut headers: Vec<(String, String)> = headers.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
        Reply::Fixed { status, headers, body: Bytes::from(body) }
    };
    let empty = |status: u16, location: String| Reply::Fixed {
        status,
        headers: vec![("location".into(), location)],
        body: Bytes::new(),
    };
    let stream = |chunks: Vec<(Duration, Bytes)>, cut_after: Option<Duration>| Reply::Stream {
        status: 200,
        headers: Vec::new(),
        chunks,
        cut_after,
    };
    let echo_location = format!("http://{host}{path}/?{query}&auth={}", form(&auth));
    match path.as_str() {
        "/count" => text(200, vec![], format!("counted {}", req.body.len())),
        "/echo301" => text(
            301,
            vec![
                ("location", echo_location.clone()),
                ("content-location", full_url.clone()),
                ("link", format!("<{full_url}>; rel=self")),
                ("refresh", format!("0; url={full_url}")),
                ("x-echo-url", full_url.clone()),
                ("x-echo-auth", auth.clone()),
            ],
            dump(),
        ),
        "/echo400" => text(400, vec![("x-echo-url", full_url.clone())], dump()),
        // Streamed in small pieces so a secret is split across chunks.
        "/echo200" => {
            let text = dump().into_bytes();
            stream(text.chunks(5).map(|c| (Duration::ZERO, Bytes::copy_from_slice(c))).collect(), None)
        }
        "/redirect-in" => empty(302, format!("http://{host}/landing?x=1")),
        "/redirect-out" => empty(302, "https://evil.example/steal".to_owned()),
        "/cookie" => text(200, vec![("set-cookie", "sid=upstream; Path=/".to_owned())], "with cookie".to_owned()),
        // Half a body, then the connection breaks.
        "/half" => stream(vec![(Duration::ZERO, Bytes::from(vec![b'h'; 1000]))], Some(Duration::from_millis(100))),
        "/stall" => stream(
            vec![
                (Duration::ZERO, Bytes::from(vec![b's'; 1000])),
                (Duration::from_secs(5), Bytes::from_static(b"late")),
            ],
            None,
        ),
        // 17 MiB: over the default 16 MiB response cap.
        "/huge" => stream((0..17 * 16).map(|_| (Duration::ZERO, Bytes::from(vec![b'z'; 64 * 1024]))).collect(), None),
        _ => text(404, vec![], "unknown".to_owned()),
    }
}

/// The hostile upstream, the secret file, and the configuration of the providers using them.
struct Setup {
    up: Hostile,
    url: String,
    _dir: tempfile::TempDir,
    options: Options,
}

async fn setup() -> Setup {
    let up = Hostile { mock: MockUpstream::answering(Reply::with(hostile_reply)).await.unwrap() };
    let url = up.mock.url();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret_file = secret_file.display().to_string();
    let payee: Address = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".parse().unwrap();
    let provider =
        |id: &str, prefix: &str, credential: &str, timeout_ms: u64, route: fn(RouteConfig) -> RouteConfig| {
            ProviderConfig::new(id, payee, &url)
                .strip_prefix(&format!("/{prefix}"))
                .upstream_timeout_ms(timeout_ms)
                .credential(&format!("{{ {credential}, secret_file = {} }}", quote(&secret_file)))
                .route(route(RouteConfig::new(&format!("/{prefix}/{{x}}"), PRICE_ATOMIC).methods(&["GET", "POST"])))
        };
    let header = r#"inject = "header""#;
    let before = |r: RouteConfig| r.settlement("before");
    let providers = vec![
        provider("hostile-h", "hh", header, 5_000, |r| r),
        provider("hostile-q", "hq", r#"inject = "query", param = "api_key""#, 5_000, |r| r),
        provider("hostile-b", "hb", r#"inject = "basic", username = "svc""#, 5_000, |r| r),
        // A short timeout, for the stalled body (and the stalled request body).
        provider("hostile-before", "hbf", header, 1_000, before),
        // Room to relay 16 MiB in a debug build.
        provider("hostile-big", "hbig", header, 60_000, before),
        provider("hostile-lenient", "hcr", header, 5_000, |r| {
            r.set("charge_redirects", true).set("allow_set_cookie", true)
        }),
        provider("hostile-small", "hs", header, 1_000, |r| r.set("body_bytes_max", 1024u64)),
    ];
    Setup { up, url, _dir: dir, options: Options { providers, ..Options::default() } }
}

/// Runs a hostile-upstream scenario on SQLite and then on PostgreSQL (unless skipped).
macro_rules! hostile_both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let s = setup().await;
                if let Some(h) = Harness::start_with(crate::harness::Engine::Sqlite, s.options.clone()).await {
                    ($body)(&h, &s).await;
                    h.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let s = setup().await;
                if let Some(h) = Harness::start_with(crate::harness::Engine::Postgres, s.options.clone()).await {
                    ($body)(&h, &s).await;
                    h.stop().await;
                }
            }
        }
    };
}

/// Sends `head` and then `chunks` (one per write, `pause` apart) on a raw socket; returns
/// the whole answer.
async fn raw_exchange(h: &Harness, head: String, chunks: Vec<Vec<u8>>, pause: Duration) -> String {
    let addr = h.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        tokio::time::sleep(pause).await;
        // The gateway may answer and close before the last piece: that is the point.
        if s.write_all(&c).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

// Goal: a chunked request body over the route's cap on a priced `after` route never reaches
// the upstream (zero requests, not even the head): the agent gets 413
// `request_body_too_large`, the entry is voided and nothing is charged; a chunked body within
// the cap is forwarded whole.
async fn chunked_body_over_cap_never_reaches_upstream(h: &Harness, s: &Setup) {
    let b = h.payment_post("/hs/count").await;
    let head = format!(
        "POST /hs/count HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\
         payment-signature: {}\r\n\r\n",
        v2_header(&b)
    );
    let mut pieces: Vec<Vec<u8>> = (0..4).map(|_| chunk(&[b'x'; 512])).collect();
    pieces.push(b"0\r\n\r\n".to_vec());
    let answer = raw_exchange(h, head, pieces, Duration::from_millis(150)).await;
    assert_eq!(s.up.hits(), 0, "the upstream saw a request whose body was over the cap");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_body_too_large"), "{answer}");
    let entry = h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(entry.reason.as_deref(), Some("request_body_too_large"));

    let b = h.payment_post("/hs/count").await;
    let head = format!(
        "POST /hs/count HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\
         payment-signature: {}\r\n\r\n",
        v2_header(&b)
    );
    let pieces = vec![chunk(&[b'y'; 300]), chunk(&[b'y'; 300]), b"0\r\n\r\n".to_vec()];
    let answer = raw_exchange(h, head, pieces, Duration::from_millis(50)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("counted 600"), "{answer}");
    assert_eq!(s.up.hits(), 1);
    h.wait_state(&b, EntryState::Settled).await;
    assert_eq!(h.payee_balance().await, U256::ZERO, "the hostile providers pay a different payee");
}
hostile_both_engines!(chunked_body_cap, chunked_body_over_cap_never_reaches_upstream);

// Goal: a chunked body that breaks off (the agent half-closes mid-chunk) answers 400
// `request_body_incomplete`, one that stops arriving answers 408 `request_body_timeout` after
// the route's upstream timeout; neither reaches the upstream, both entries are voided with that
// cause.
async fn broken_request_bodies_never_reach_upstream(h: &Harness, s: &Setup) {
    let head = |b: &tollgate_test_support::PaymentBuilder| {
        format!(
            "POST /hs/count HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\
             payment-signature: {}\r\n\r\n",
            v2_header(b)
        )
    };
    let addr = h.url.trim_start_matches("http://").to_owned();

    let b = h.payment_post("/hs/count").await;
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(head(&b).as_bytes()).await.unwrap();
    sock.write_all(b"100\r\nonly a few bytes").await.unwrap();
    sock.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("request_body_incomplete"), "{answer}");
    assert_eq!(h.wait_state(&b, EntryState::Voided).await.reason.as_deref(), Some("request_body_incomplete"));

    let b = h.payment_post("/hs/count").await;
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(head(&b).as_bytes()).await.unwrap();
    sock.write_all(&chunk(b"a first piece, then nothing")).await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut out)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&out[..n]);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_body_timeout"), "{answer}");
    assert_eq!(h.wait_state(&b, EntryState::Voided).await.reason.as_deref(), Some("request_body_timeout"));
    assert_eq!(s.up.hits(), 0);
}
hostile_both_engines!(broken_request_body, broken_request_bodies_never_reach_upstream);

/// Every header (name and value bytes) of a response, as text.
fn header_text(headers: &reqwest::header::HeaderMap) -> String {
    headers.iter().map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect()
}

async fn paid_get(h: &Harness, path: &str) -> (tollgate_test_support::PaymentBuilder, reqwest::Response) {
    let b = h.payment(path).await;
    let resp = h.http.get(format!("{}{path}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
    (b, resp)
}

// Goal: a 3xx is not charged by default (voided `upstream_redirect`, authorization unused),
// its Location is rewritten into the gateway's path space when it points inside the upstream
// base and dropped otherwise, and the upstream's host appears in no header; a route with
// `charge_redirects = true` settles it.
async fn redirects_are_not_charged_and_rewritten(h: &Harness, s: &Setup) {
    let upstream_host = s.url.trim_start_matches("http://");
    let (b, resp) = paid_get(h, "/hh/redirect-in").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/hh/landing?x=1");
    assert!(!resp.headers().contains_key("payment-response"), "no receipt when not charged");
    assert!(!header_text(resp.headers()).contains(upstream_host));
    let entry = h.wait_state(&b, EntryState::Voided).await;
    assert_eq!(entry.reason.as_deref(), Some("upstream_redirect"));
    assert!(!h.chain.authorization_used(b.from, b.nonce).await.unwrap());

    let (b, resp) = paid_get(h, "/hh/redirect-out").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(!resp.headers().contains_key("location"), "a Location outside the upstream base is dropped");
    h.wait_state(&b, EntryState::Voided).await;

    let (b, resp) = paid_get(h, "/hcr/redirect-in").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/hcr/landing?x=1");
    assert!(crate::harness::receipt_of(&resp, "payment-response").success);
    h.wait_state(&b, EntryState::Settled).await;
    assert!(h.chain.authorization_used(b.from, b.nonce).await.unwrap());
}
hostile_both_engines!(redirects, redirects_are_not_charged_and_rewritten);

/// The spellings of the secret an upstream might echo.
fn secret_forms() -> Vec<String> {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc:{SECRET}"));
    let lower = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect::<String>()
    };
    vec![SECRET.to_owned(), form(SECRET), lower(SECRET), basic.clone(), form(&basic)]
}

// Goal: with header, query and basic injection, an upstream that echoes its URL and the
// credential in a 301 (Location, Content-Location, Link, Refresh, custom headers, body), in a
// 400 body, and in a streamed `before`-mode body split into 5-byte chunks leaks no form of
// the secret (raw, URL-encoded, base64) and not the upstream's host in any header; a WARN
// names the provider and no log line carries the secret.
async fn no_response_byte_carries_the_secret(h: &Harness, s: &Setup) {
    let logs = crate::secrets::captured_logs();
    let upstream_host = s.url.trim_start_matches("http://");
    let forms = secret_forms();
    for prefix in ["hh", "hq", "hb"] {
        for (upstream_path, status) in [("echo301", 301u16), ("echo400", 400)] {
            let path = format!("/{prefix}/{upstream_path}");
            let b = h.payment(&path).await;
            let resp = h
                .http
                .get(format!("{}{path}?a=1", h.url))
                .header("payment-signature", v2_header(&b))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{path}");
            let headers = header_text(resp.headers());
            let body = resp.text().await.unwrap();
            assert!(body.contains("[redacted]"), "{path}: the upstream did echo the credential: {body}");
            for f in &forms {
                assert!(!headers.contains(f.as_str()), "{path}: secret form {f:?} in headers:\n{headers}");
                assert!(!body.contains(f.as_str()), "{path}: secret form {f:?} in body:\n{body}");
            }
            // The URL-bearing headers are rewritten into the gateway's space (a custom header
            // that spells the host, like `x-echo-url`, is only redacted).
            for line in headers
                .lines()
                .filter(|l| ["location:", "content-location:", "link:", "refresh:"].iter().any(|n| l.starts_with(n)))
            {
                assert!(!line.contains(upstream_host), "{path}: upstream host in {line}");
            }
            if status == 301 {
                let location = headers.lines().find(|l| l.starts_with("location:")).unwrap_or_default();
                assert!(location.starts_with(&format!("location: /{prefix}/echo301/?a=1")), "{location}");
            }
            h.wait_state(&b, EntryState::Voided).await;
        }
    }
    let (b, resp) = paid_get(h, "/hbf/echo200").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(body.contains("[redacted]"), "{body}");
    for f in &forms {
        assert!(!body.contains(f.as_str()), "streamed body carries {f:?}:\n{body}");
    }
    h.wait_state(&b, EntryState::Settled).await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for provider in ["hostile-h", "hostile-q", "hostile-b", "hostile-before"] {
        assert!(
            text.lines().any(|l| l.contains("WARN") && l.contains(provider) && l.contains("redacted")),
            "no WARN naming {provider}"
        );
    }
    for f in &forms {
        assert!(!text.contains(f.as_str()), "secret form {f:?} in the logs");
    }
}
hostile_both_engines!(redaction, no_response_byte_carries_the_secret);

// Goal: the agent's X-Forwarded-For/-Host/-Proto, Forwarded and X-Real-IP never reach the
// upstream; the gateway's own (socket IP, scheme and host of the public URL) do; the
// upstream's Set-Cookie is dropped unless the route sets `allow_set_cookie`.
async fn forwarding_headers_and_cookies(h: &Harness, s: &Setup) {
    for (path, cookie) in [("/hh/cookie", false), ("/hcr/cookie", true)] {
        let b = h.payment(path).await;
        let resp = h
            .http
            .get(format!("{}{path}", h.url))
            .header("payment-signature", v2_header(&b))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=6.6.6.6;host=evil.example")
            .header("x-real-ip", "6.6.6.6")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers().contains_key("set-cookie"), cookie, "{path}");
        let seen = s.up.last_headers();
        assert_eq!(seen.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.1"], "{path}");
        assert_eq!(seen["x-forwarded-proto"], "http");
        assert_eq!(seen["x-forwarded-host"], "gateway.test");
        assert!(!seen.contains_key("forwarded") && !seen.contains_key("x-real-ip"), "{path}: {seen:?}");
        h.wait_state(&b, EntryState::Settled).await;
    }
}
hostile_both_engines!(forwarding, forwarding_headers_and_cookies);

// Goal: a path over 8,192 bytes or an oversized query with a valid payment is refused with
// 414 `uri_too_long` before verification: no upstream call, no ledger entry, nothing charged.
async fn oversized_targets_are_refused_first(h: &Harness, s: &Setup) {
    for target in [format!("/hh/{}", "a".repeat(9_000)), format!("/hh/x?q={}", "b".repeat(9_000))] {
        let b = h.payment("/hh/x").await;
        let resp =
            h.http.get(format!("{}{target}", h.url)).header("payment-signature", v2_header(&b)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
        assert!(h.entry_for(&b).await.is_none(), "nothing reserved");
    }
    assert_eq!(s.up.hits(), 0);
    assert_eq!(h.upstream.calls(), 0);
}
hostile_both_engines!(uri_too_long, oversized_targets_are_refused_first);

// Goal: in `before` mode a body that breaks off after settlement — upstream reset, upstream
// timeout, response cap hit mid-body — moves the settled entry to `refund_owed` with the
// cause; a body delivered whole stays `settled`.
async fn broken_before_bodies_are_owed_back(h: &Harness, _s: &Setup) {
    for (path, cause) in [
        ("/hbf/half", "upstream_body_incomplete"),
        ("/hbf/stall", "upstream_timeout"),
        ("/hbig/huge", "upstream_response_too_large"),
    ] {
        let (b, resp) = paid_get(h, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}: headers went out after settlement");
        assert!(resp.bytes().await.is_err(), "{path}: the agent sees the body break off");
        let entry = h.wait_state(&b, EntryState::RefundOwed).await;
        assert_eq!(entry.reason.as_deref(), Some(cause), "{path}");
        assert!(h.chain.authorization_used(b.from, b.nonce).await.unwrap(), "{path}: it was settled first");
    }
    let (b, resp) = paid_get(h, "/hbf/cookie").await;
    assert_eq!(resp.text().await.unwrap(), "with cookie");
    h.wait_state(&b, EntryState::Settled).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.entry_for(&b).await.unwrap().state, EntryState::Settled, "a whole body is not owed back");
}
hostile_both_engines!(before_broken_body, broken_before_bodies_are_owed_back);
