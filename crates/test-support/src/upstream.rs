//! [`MockUpstream`]: the one provider upstream of every test, the bench's paid checks and the
//! demo. A test scripts it per path — plain answers, JSON, redirects, echoes of what it
//! received, answers computed from the request (a key check, a path parameter, a side effect
//! before answering), and the broken deliveries a gateway must survive (reset mid-body,
//! trickle, oversize, slow headers, dropped connections, refused connections) — and it records
//! every request it got (method, URI, headers, body, arrival time) with hit counts per path.
//!
//! Owns the script and the record. Knows nothing of payments or the gateway: tests assert
//! "the upstream was (not) reached" and "it received exactly these headers" from here.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use crate::serve::{ConnCtl, FixtureBody, HttpServer, handler, never, response};

/// The largest request body the upstream reads and records.
const REQUEST_BYTES_MAX: usize = 64 << 20;

/// How long a mid-body reset waits after handing its bytes to hyper before resetting, so
/// they are on the wire first.
const RESET_FLUSH_WAIT: Duration = Duration::from_millis(100);

/// An answer computed from the request, possibly after awaiting something (a key check, a
/// path parameter in the body, a chain warp before answering).
#[derive(Clone)]
pub struct Responder(Arc<ResponderFn>);

/// The function behind a [`Responder`].
type ResponderFn = dyn Fn(Recorded) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync;

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder(..)")
    }
}

impl PartialEq for Responder {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Responder {}

/// How the upstream answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Status, headers and a whole body.
    Fixed {
        /// HTTP status.
        status: u16,
        /// Response headers (name, value).
        headers: Vec<(String, String)>,
        /// The body.
        body: Bytes,
    },
    /// A redirect (301, 302, 307, ...) to `location`, with a short body.
    Redirect {
        /// HTTP status.
        status: u16,
        /// The `Location` header, verbatim (may carry whatever the request carried).
        location: String,
    },
    /// Status with a JSON body repeating what was received: `method`, `uri` (path and query,
    /// as an upstream error page echoing its URL would), `headers` (name → values) and `body`
    /// (lossy UTF-8).
    Echo {
        /// HTTP status.
        status: u16,
    },
    /// 200 declaring `declared_bytes` of body, sends `sent_bytes` of them, then resets the
    /// TCP connection (an upstream crash mid-body).
    ResetAfter {
        /// The `Content-Length` announced.
        declared_bytes: usize,
        /// Bytes actually sent before the reset (less than declared).
        sent_bytes: usize,
    },
    /// 200 with `total_bytes` of body sent `chunk_bytes` at a time, one chunk per
    /// `interval` (a slow-loris upstream; the first chunk goes at once).
    Trickle {
        /// Whole body length (announced as `Content-Length`).
        total_bytes: usize,
        /// Bytes per chunk.
        chunk_bytes: usize,
        /// Pause between chunks.
        interval: Duration,
    },
    /// 200 with a body of `bytes` bytes of `x`, announced by `Content-Length` or, when
    /// `chunked`, streamed in 64 KiB chunks without a length (a cap then trips mid-stream).
    Oversize {
        /// Body length.
        bytes: usize,
        /// Whether to omit the length.
        chunked: bool,
    },
    /// Close the connection without an answer (with a TCP reset when `reset`).
    Drop {
        /// Reset instead of an orderly close.
        reset: bool,
    },
    /// Wait `delay` before sending the status line and headers, then answer `then`.
    Delayed {
        /// Time before headers.
        delay: Duration,
        /// The answer.
        then: Box<Reply>,
    },
    /// Status and headers, then a body streamed without a length, chunk by chunk (each after
    /// its pause), ending normally or, with `cut_after`, by closing the connection that long
    /// after the last chunk went out (a body that breaks off mid-delivery).
    Stream {
        /// HTTP status.
        status: u16,
        /// Response headers (name, value).
        headers: Vec<(String, String)>,
        /// (pause before the chunk, the chunk).
        chunks: Vec<(Duration, Bytes)>,
        /// Close the connection (an orderly FIN, no final chunk) this long after the last one.
        cut_after: Option<Duration>,
    },
    /// The answer a function computes from the request (see [`Reply::with`]).
    Computed(Responder),
}

impl Reply {
    /// `status` with a text body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Fixed {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// `200 ok`.
    pub fn ok() -> Reply {
        Reply::text(200, "ok")
    }

    /// `status` with a body of `content_type`.
    pub fn body(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::Fixed { status, headers: vec![("content-type".into(), content_type.into())], body: body.into() }
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::body(status, "application/json", value.to_string())
    }

    /// The answer `f` computes from the recorded request (synchronously).
    pub fn with(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Reply {
        Reply::with_async(move |req| {
            let reply = f(&req);
            async move { reply }
        })
    }

    /// The answer `f` computes from the recorded request, after awaiting what it must.
    pub fn with_async<F, Fut>(f: F) -> Reply
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Reply::Computed(Responder(Arc::new(move |req| Box::pin(f(req)))))
    }

    /// This answer, after `delay` before headers.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply::Delayed { delay, then: Box::new(self) }
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// Headers in arrival order (name lower-case, value raw).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body (empty when it could not be read).
    pub body: Bytes,
    /// When its headers arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name` (lower-case), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

#[derive(Debug)]
struct State {
    /// Script per path (exact) or per prefix (`/a/*`); longest match wins.
    script: HashMap<String, Reply>,
    default: Reply,
    /// One-shot answers, per script key, taken before the script.
    next: HashMap<String, Vec<Reply>>,
    requests: Vec<Recorded>,
    hits: BTreeMap<String, u64>,
}

impl State {
    /// The script key that matches `path`: exact, else the longest `prefix*`, else `*`.
    fn key_for(&self, path: &str) -> String {
        let keys = self.script.keys().chain(self.next.keys());
        if keys.clone().any(|k| k == path) {
            return path.to_owned();
        }
        keys.filter(|k| k.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
            .max_by_key(|k| k.len())
            .cloned()
            .unwrap_or_else(|| "*".to_owned())
    }

    fn reply_for(&mut self, path: &str) -> Reply {
        let key = self.key_for(path);
        if let Some(queue) = self.next.get_mut(&key)
            && !queue.is_empty()
        {
            let reply = queue.remove(0);
            if queue.is_empty() {
                self.next.remove(&key);
            }
            return reply;
        }
        self.script.get(&key).cloned().unwrap_or_else(|| self.default.clone())
    }
}

/// A scripted, recording HTTP/1.1 upstream on `127.0.0.1:<free port>`; dropped, it stops.
///
/// Paths not scripted get the default answer (`200 ok` unless changed). A script key is an
/// exact path (`/v1/x`), a prefix ending in `*` (`/v1/*`), or `*` for everything.
#[derive(Debug)]
pub struct MockUpstream {
    server: HttpServer,
    state: Arc<Mutex<State>>,
}

impl MockUpstream {
    /// Starts the upstream answering `200 ok` everywhere.
    pub async fn start() -> anyhow::Result<MockUpstream> {
        Self::start_with(None).await
    }

    /// Starts the upstream over TLS with `tls` (e.g. [`crate::TestCa::server_config`] for
    /// `localhost`).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> anyhow::Result<MockUpstream> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<MockUpstream> {
        let state = Arc::new(Mutex::new(State {
            script: HashMap::new(),
            default: Reply::ok(),
            next: HashMap::new(),
            requests: Vec::new(),
            hits: BTreeMap::new(),
        }));
        let st = state.clone();
        let server = HttpServer::start_with(handler(move |req, ctl| handle(req, ctl, st.clone())), tls).await?;
        Ok(MockUpstream { server, state })
    }

    /// The base URL (`http://127.0.0.1:<port>`, or `https://localhost:<port>` over TLS), for
    /// a provider's `upstream`.
    pub fn url(&self) -> String {
        self.server.base_url()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Starts the upstream answering `reply` everywhere.
    pub async fn answering(reply: Reply) -> anyhow::Result<MockUpstream> {
        let up = Self::start().await?;
        up.set_default(reply);
        Ok(up)
    }

    /// Keeps the upstream serving for the rest of the test process (as a spawned server task
    /// would) and returns its URL: for suites that only ever need the address.
    pub fn detach(self) -> String {
        Box::leak(Box::new(self)).url()
    }

    /// Answers requests matching `key` (exact path, `prefix*` or `*`) with `reply` from now on.
    pub fn script(&self, key: &str, reply: Reply) {
        self.state().script.insert(key.to_owned(), reply);
    }

    /// The answer for paths no key matches.
    pub fn set_default(&self, reply: Reply) {
        self.state().default = reply;
    }

    /// Answers the next `k` requests matching `key` with `reply`, then the script again.
    pub fn fail_next(&self, key: &str, k: usize, reply: Reply) {
        self.state().next.entry(key.to_owned()).or_default().extend(std::iter::repeat_n(reply, k));
    }

    /// Removes every script and one-shot answer (the default stays).
    pub fn clear_script(&self) {
        let mut st = self.state();
        st.script.clear();
        st.next.clear();
    }

    /// Requests whose headers arrived on `path` (without query).
    pub fn hits(&self, path: &str) -> u64 {
        self.state().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received on any path.
    pub fn total_hits(&self) -> u64 {
        self.state().hits.values().sum()
    }

    /// Every request whose body was read, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<Recorded> {
        self.state().requests.last().cloned()
    }

    /// Forgets recorded requests and hit counts.
    pub fn reset_record(&self) {
        let mut st = self.state();
        st.requests.clear();
        st.hits.clear();
    }

    /// Takes the upstream down: the port refuses connections, open ones are closed.
    pub fn down(&self) {
        self.server.down();
    }

    /// Brings it back on the same port.
    pub async fn up(&self) -> anyhow::Result<()> {
        Ok(self.server.up().await?)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("upstream state")
    }
}

async fn handle(req: Request<Incoming>, ctl: Arc<ConnCtl>, state: Arc<Mutex<State>>) -> Response<FixtureBody> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let uri = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let path = parts.uri.path().to_owned();
    let reply = {
        let mut st = state.lock().expect("upstream state");
        *st.hits.entry(path.clone()).or_default() += 1;
        st.reply_for(&path)
    };
    let body = Limited::new(body, REQUEST_BYTES_MAX).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.as_str().to_owned(),
        uri,
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        body,
        at,
    };
    state.lock().expect("upstream state").requests.push(recorded.clone());
    answer(reply, &recorded, &ctl).await
}

async fn answer(mut reply: Reply, req: &Recorded, ctl: &Arc<ConnCtl>) -> Response<FixtureBody> {
    loop {
        match reply {
            Reply::Delayed { delay, then } => {
                tokio::time::sleep(delay).await;
                reply = *then;
            }
            Reply::Computed(f) => reply = (f.0)(req.clone()).await,
            _ => break,
        }
    }
    match reply {
        Reply::Fixed { status, headers, body } => {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            response(status, &headers, body)
        }
        Reply::Redirect { status, location } => response(
            status,
            &[("location", location.as_str()), ("content-type", "text/plain")],
            format!("see {location}"),
        ),
        Reply::Echo { status } => {
            let mut headers = serde_json::Map::new();
            for (k, v) in &req.headers {
                let entry = headers.entry(k.clone()).or_insert_with(|| json!([]));
                if let Some(list) = entry.as_array_mut() {
                    list.push(String::from_utf8_lossy(v).into_owned().into());
                }
            }
            let body = json!({
                "method": req.method,
                "uri": req.uri,
                "headers": headers,
                "body": String::from_utf8_lossy(&req.body),
            });
            response(status, &[("content-type", "application/json")], body.to_string())
        }
        Reply::ResetAfter { declared_bytes, sent_bytes } => {
            let (tx, body) = FixtureBody::channel();
            let ctl = ctl.clone();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from(vec![b'x'; sent_bytes])).await;
                // Capacity 1: once a permit is free, hyper has taken the chunk; give it time
                // to reach the socket, then reset.
                let _ = tx.reserve().await;
                tokio::time::sleep(RESET_FLUSH_WAIT).await;
                ctl.abort(true);
            });
            streamed(Some(declared_bytes), body)
        }
        Reply::Trickle { total_bytes, chunk_bytes, interval } => {
            let (tx, body) = FixtureBody::channel();
            tokio::spawn(async move {
                let mut left = total_bytes;
                while left > 0 {
                    let n = left.min(chunk_bytes.max(1));
                    if tx.send(Bytes::from(vec![b'x'; n])).await.is_err() {
                        return;
                    }
                    left -= n;
                    if left > 0 {
                        tokio::time::sleep(interval).await;
                    }
                }
            });
            streamed(Some(total_bytes), body)
        }
        Reply::Oversize { bytes, chunked: false } => response(200, &[], vec![b'x'; bytes]),
        Reply::Oversize { bytes, chunked: true } => {
            let (tx, body) = FixtureBody::channel();
            tokio::spawn(async move {
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(64 << 10);
                    if tx.send(Bytes::from(vec![b'x'; n])).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
            streamed(None, body)
        }
        Reply::Drop { reset } => {
            ctl.abort(reset);
            never().await
        }
        Reply::Stream { status, headers, chunks, cut_after } => {
            let (tx, body) = FixtureBody::channel();
            let ctl = ctl.clone();
            tokio::spawn(async move {
                for (pause, chunk) in chunks {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                if let Some(wait) = cut_after {
                    // Capacity 1: once a permit is free, hyper has taken the last chunk. The
                    // sender lives until the connection is gone (its body with it), so the
                    // body never ends properly.
                    let _ = tx.reserve().await;
                    tokio::time::sleep(wait).await;
                    ctl.abort(false);
                    tx.closed().await;
                }
            });
            let mut builder = Response::builder().status(status);
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            builder.body(body).unwrap_or_else(|_| Response::new(FixtureBody::empty()))
        }
        // Unwrapped by the loop above.
        Reply::Delayed { .. } | Reply::Computed(_) => response(500, &[], "unreachable"),
    }
}

fn streamed(content_length: Option<usize>, body: FixtureBody) -> Response<FixtureBody> {
    let mut builder = Response::builder().status(200).header("content-type", "application/octet-stream");
    if let Some(n) = content_length {
        builder = builder.header("content-length", n);
    }
    builder.body(body).unwrap_or_else(|_| Response::new(FixtureBody::empty()))
}
