//! `MockUpstream` seen through reqwest: each scripted delivery arrives as scripted.

use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_test_support::{MockUpstream, Reply};

fn client() -> reqwest::Client {
    tollgate_test_support::http_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

// Goal: a reset after N of M announced bytes reaches the client as an incomplete body (an
// error while reading, never a short "complete" body).
#[tokio::test]
async fn reset_mid_body_is_an_incomplete_body() {
    let up = MockUpstream::start().await.unwrap();
    up.script("/big", Reply::ResetAfter { declared_bytes: 100_000, sent_bytes: 1_000 });
    let resp = client().get(format!("{}/big", up.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(100_000));
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body() || err.is_decode(), "incomplete body: {err:?}");
    assert_eq!(up.hits("/big"), 1);
}

// Goal: recorded requests carry method, path+query, headers and body; echo, redirect,
// fixed, one-shot failures and per-prefix scripts answer as scripted.
#[tokio::test]
async fn records_and_answers() {
    let up = MockUpstream::start().await.unwrap();
    let http = client();

    up.script("/echo/*", Reply::Echo { status: 400 });
    let resp = http.post(format!("{}/echo/x?a=1", up.url())).header("x-key", "k1").body("hello").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["uri"], "/echo/x?a=1");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["x-key"][0], "k1");
    assert_eq!(v["body"], "hello");
    let last = up.last_request().unwrap();
    assert_eq!(last.uri, "/echo/x?a=1");
    assert_eq!(last.path(), "/echo/x");
    assert_eq!(last.header("x-key").as_deref(), Some("k1"));
    assert_eq!(&last.body[..], b"hello");
    assert_eq!(up.hits("/echo/x"), 1);

    up.script("/moved", Reply::Redirect { status: 301, location: "/moved/?api_key=S".into() });
    let resp = http.get(format!("{}/moved", up.url())).send().await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/moved/?api_key=S");

    up.script("/f", Reply::text(201, "made"));
    up.fail_next("/f", 2, Reply::text(503, "busy"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(http.get(format!("{}/f", up.url())).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 201]);

    // Unscripted paths get the default.
    assert_eq!(http.get(format!("{}/other", up.url())).send().await.unwrap().text().await.unwrap(), "ok");
    up.set_default(Reply::text(404, "none"));
    assert_eq!(http.get(format!("{}/other", up.url())).send().await.unwrap().status(), 404);
    assert_eq!(up.total_hits(), 7);
}

// Goal: trickle, slow headers, oversize (with and without a length) and dropped
// connections behave as their names say.
#[tokio::test]
async fn slow_big_and_dropped() {
    let up = MockUpstream::start().await.unwrap();
    let http = client();

    up.script("/trickle", Reply::Trickle { total_bytes: 40, chunk_bytes: 10, interval: Duration::from_millis(100) });
    let started = Instant::now();
    let body = http.get(format!("{}/trickle", up.url())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.len(), 40);
    assert!(started.elapsed() >= Duration::from_millis(300));

    up.script("/slow", Reply::ok().delayed(Duration::from_millis(300)));
    let started = Instant::now();
    let _ = http.get(format!("{}/slow", up.url())).send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "headers came only after the delay");

    up.script("/huge", Reply::Oversize { bytes: 3 << 20, chunked: false });
    let resp = http.get(format!("{}/huge", up.url())).send().await.unwrap();
    assert_eq!(resp.content_length(), Some(3 << 20));
    assert_eq!(resp.bytes().await.unwrap().len(), 3 << 20);
    up.script("/huge", Reply::Oversize { bytes: 3 << 20, chunked: true });
    let resp = http.get(format!("{}/huge", up.url())).send().await.unwrap();
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert_eq!(resp.bytes().await.unwrap().len(), 3 << 20);

    up.script("/drop", Reply::Drop { reset: false });
    assert!(http.get(format!("{}/drop", up.url())).send().await.is_err());
    up.script("/drop", Reply::Drop { reset: true });
    assert!(http.get(format!("{}/drop", up.url())).send().await.is_err());
    assert_eq!(up.hits("/drop"), 2);
}

// Goal: a computed answer sees the recorded request (headers, path) and can refuse it, a
// JSON answer carries its content type, and an async answer may await before answering.
#[tokio::test]
async fn computed_and_json_answers() {
    let up = MockUpstream::start().await.unwrap();
    up.script(
        "/weather/*",
        Reply::with(|req| match req.header("authorization").as_deref() {
            Some("Bearer k") => {
                Reply::json(200, &serde_json::json!({ "city": req.path().trim_start_matches("/weather/") }))
            }
            _ => Reply::text(401, "missing or wrong API key"),
        }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    up.script(
        "/later",
        Reply::with_async(move |_| {
            let rx = rx.clone();
            async move {
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Reply::text(200, "later")
            }
        }),
    );
    let http = client();
    let ok = http.get(format!("{}/weather/lima", up.url())).bearer_auth("k").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/json");
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["city"], "lima");
    let refused = http.get(format!("{}/weather/lima", up.url())).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(up.hits("/weather/lima"), 2);

    let url = format!("{}/later", up.url());
    let pending = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "the answer waits for the test");
    tx.send(()).unwrap();
    assert_eq!(pending.await.unwrap(), "later");
    assert_eq!(up.port().to_string(), up.url().rsplit(':').next().unwrap());
}
